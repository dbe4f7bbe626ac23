//! Which door a stored job came in by: jobs stored from StreamJob objects carry the cluster
//! that owns them in an annotation, and a watch's [`Scope`] says which of them it owns.

use crate::state::{JobRecord, StoredSpec};
use scheduler::model::SiteId;

/// The annotation twinsite puts on the stored copy of a job that came from a StreamJob
/// object, naming the cluster that owns it (`kubernetes/<site>`). Reserved: neither an object
/// nor an API body may set it.
pub const ORIGIN_ANNOTATION: &str = "twinsite.io/origin";

/// The origin annotation's value for jobs whose objects live in `site`'s cluster.
pub fn origin(site: &SiteId) -> String {
    format!("kubernetes/{site}")
}

/// The origin annotation of a stored job's StreamJob.
pub fn origin_of(stored: &StoredSpec) -> Option<&str> {
    stored.annotation(ORIGIN_ANNOTATION)
}

/// Which objects and jobs the watch owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The site whose cluster holds the StreamJob objects.
    pub home: SiteId,
    /// The one namespace watched; `None`: all.
    pub namespace: Option<String>,
}

impl Scope {
    /// Whether a stored job belongs to this watch: marked with its origin, in its namespace.
    pub fn owns(&self, record: &JobRecord) -> bool {
        origin_of(&record.spec) == Some(origin(&self.home).as_str())
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == record.namespace)
    }
}
