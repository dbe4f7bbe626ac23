//! The key layout, in one place so etcd, the embedded store and the README agree.
//!
//! ```text
//! <prefix>/jobs/<namespace>/<name>                              JobRecord
//! <prefix>/checkpoints/<namespace>/<name>/completed/<site>      CheckpointPointer (latest complete in <site>)
//! <prefix>/checkpoints/<namespace>/<name>/replicated/<site>     CheckpointPointer (latest verified copy at peer <site>)
//! <prefix>/sites/<site>                                         SiteRecord (state + epoch)
//! <prefix>/failover/<job.ns.name | site.id | op.id>             failover engine record (JSON, resumed by a new leader)
//! <prefix>/audit/<seq, 20 digits, zero-padded>                  AuditEntry
//! <prefix>/election/<name>                                      etcd election (leader keys live below it)
//! <prefix>/agents/<site>                                        etcd election of <site>'s agents: the holder's lease is the site's peer view
//! ```
//!
//! The default prefix is `/twinsite/v1`. Segments are restricted to `[A-Za-z0-9._-]`, never
//! start with `.` and are at most 200 bytes, so every key is also a safe relative file path.

use super::StateError;
use super::record::CheckpointKind;

/// The prefix every key starts with unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/twinsite/v1";

/// Longest accepted segment: leaves room for the embedded store's suffixes under NAME_MAX.
const MAX_SEGMENT_BYTES: usize = 200;

/// Builds every key the state store uses under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl KeyLayout {
    /// `prefix` is absolute (`/a/b`), without a trailing slash, made of valid segments.
    pub fn new(prefix: &str) -> Result<Self, StateError> {
        let invalid = |reason| StateError::InvalidName {
            what: "key prefix",
            value: prefix.to_owned(),
            reason,
        };
        let Some(rest) = prefix.strip_prefix('/') else {
            return Err(invalid("must start with '/'"));
        };
        if rest.is_empty() {
            return Err(invalid("must name at least one segment"));
        }
        for segment in rest.split('/') {
            validate_segment("key prefix segment", segment)?;
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn job(&self, namespace: &str, name: &str) -> Result<String, StateError> {
        validate_segment("job namespace", namespace)?;
        validate_segment("job name", name)?;
        Ok(format!("{}/jobs/{namespace}/{name}", self.prefix))
    }

    pub fn jobs(&self) -> String {
        format!("{}/jobs/", self.prefix)
    }

    pub fn checkpoint(
        &self,
        namespace: &str,
        name: &str,
        kind: CheckpointKind,
        site: &str,
    ) -> Result<String, StateError> {
        validate_segment("site name", site)?;
        Ok(format!(
            "{}{}/{site}",
            self.checkpoints_of_job(namespace, name)?,
            kind.as_str()
        ))
    }

    /// The prefix of every job's checkpoint pointers.
    pub fn checkpoints(&self) -> String {
        format!("{}/checkpoints/", self.prefix)
    }

    pub fn checkpoints_of_job(&self, namespace: &str, name: &str) -> Result<String, StateError> {
        validate_segment("job namespace", namespace)?;
        validate_segment("job name", name)?;
        Ok(format!("{}/checkpoints/{namespace}/{name}/", self.prefix))
    }

    pub fn site(&self, site: &str) -> Result<String, StateError> {
        validate_segment("site name", site)?;
        Ok(format!("{}/sites/{site}", self.prefix))
    }

    pub fn sites(&self) -> String {
        format!("{}/sites/", self.prefix)
    }

    /// One record of the failover engine (`job.<ns>.<name>`, `site.<id>`, `op.<id>`).
    pub fn failover_record(&self, name: &str) -> Result<String, StateError> {
        validate_segment("failover record name", name)?;
        Ok(format!("{}/failover/{name}", self.prefix))
    }

    pub fn failover_records(&self) -> String {
        format!("{}/failover/", self.prefix)
    }

    /// Zero-padded so that key order is sequence order.
    pub fn audit(&self, seq: u64) -> String {
        format!("{}/audit/{seq:020}", self.prefix)
    }

    pub fn audits(&self) -> String {
        format!("{}/audit/", self.prefix)
    }

    /// The `(namespace, name)` a job or checkpoint key belongs to, when its segments are
    /// valid names: how a record that does not decode is still tied to its job.
    pub fn job_of_key(&self, key: &str) -> Option<(String, String)> {
        let rest = key
            .strip_prefix(&self.jobs())
            .map(|rest| (rest, true))
            .or_else(|| {
                key.strip_prefix(&format!("{}/checkpoints/", self.prefix))
                    .map(|rest| (rest, false))
            });
        let (rest, whole) = rest?;
        let mut segments = rest.splitn(3, '/');
        let namespace = segments.next()?;
        let name = segments.next()?;
        // A job key is exactly <namespace>/<name>; a checkpoint key goes on below it.
        if whole == segments.next().is_some() {
            return None;
        }
        validate_segment("job namespace", namespace).ok()?;
        validate_segment("job name", name).ok()?;
        Some((namespace.to_owned(), name.to_owned()))
    }

    pub fn election(&self, name: &str) -> Result<String, StateError> {
        validate_segment("election name", name)?;
        Ok(format!("{}/election/{name}", self.prefix))
    }
}

impl KeyLayout {
    /// The election of `site`'s agents: its leader key lives on the lease that is the
    /// site's liveness as the quorum sees it (`failover::agent`).
    pub fn agent(&self, site: &str) -> Result<String, StateError> {
        validate_segment("site name", site)?;
        Ok(format!("{}/agents/{site}", self.prefix))
    }
}

/// Checks one path segment: `[A-Za-z0-9._-]`, 1..=200 bytes, not starting with `.`.
pub fn validate_segment(what: &'static str, value: &str) -> Result<(), StateError> {
    let invalid = |reason| StateError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > MAX_SEGMENT_BYTES {
        return Err(invalid("must be at most 200 bytes"));
    }
    if value.starts_with('.') {
        return Err(invalid("must not start with '.'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may contain only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_keys_sort_in_sequence_order() {
        let layout = KeyLayout::default();
        assert!(layout.audit(9) < layout.audit(10));
        assert!(layout.audit(99_999) < layout.audit(100_000));
    }

    #[test]
    fn a_name_with_a_slash_is_rejected_and_named() {
        let err = KeyLayout::default().job("team-a", "etl/x").unwrap_err();
        assert!(err.to_string().contains("etl/x"), "{err}");
    }

    #[test]
    fn dot_segments_cannot_escape_the_store() {
        assert!(KeyLayout::default().site("..").is_err());
    }

    #[test]
    fn a_key_names_its_job_only_when_it_has_the_layout_s_shape() {
        let layout = KeyLayout::default();
        let job = Some(("shop".to_owned(), "orders".to_owned()));
        assert_eq!(layout.job_of_key("/twinsite/v1/jobs/shop/orders"), job);
        assert_eq!(
            layout.job_of_key("/twinsite/v1/checkpoints/shop/orders/completed/dc-a"),
            job
        );
        for odd in [
            "/twinsite/v1/jobs/shop",
            "/twinsite/v1/jobs/shop/orders/extra",
            "/twinsite/v1/jobs/shop/.hidden",
            "/twinsite/v1/checkpoints/shop/orders",
            "/twinsite/v1/sites/dc-a",
            "/elsewhere/jobs/shop/orders",
        ] {
            assert_eq!(layout.job_of_key(odd), None, "{odd}");
        }
    }

    #[test]
    fn agent_elections_live_beside_the_controllers_and_refuse_odd_site_names() {
        let layout = KeyLayout::default();
        assert_eq!(layout.agent("dc-a").unwrap(), "/twinsite/v1/agents/dc-a");
        assert!(layout.agent("dc-a/x").is_err());
    }

    #[test]
    fn a_relative_prefix_is_rejected() {
        assert!(KeyLayout::new("twinsite").is_err());
        assert!(KeyLayout::new("/twinsite/").is_err());
        assert!(KeyLayout::new("/tenant-a/twinsite").is_ok());
    }
}
