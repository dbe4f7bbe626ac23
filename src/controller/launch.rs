//! The controller's part of a launch: the epoch a launch carries. The conversions (StreamJob +
//! placement + generation → `LaunchSpec`, paths in a site's storage) are `crate::job::launch`.

pub use crate::job::launch::{LaunchError, Restore, in_site_storage, launch_spec, spec_hash};

impl super::Controller {
    /// The epoch of `site` as its stored record says (0 before any site event wrote one):
    /// what every launch there carries. `Ok(Err(reason))` when that record is unreadable:
    /// the epoch is unknown, and a launch with a guessed one could run beside a newer
    /// generation or be fenced at once, so nothing is launched there until it is rewritten.
    pub async fn site_epoch(
        &self,
        site: &scheduler::model::SiteId,
    ) -> Result<Result<u64, String>, crate::state::StateError> {
        match self.store.get_site(&site.0).await {
            Ok(record) => Ok(Ok(record.map_or(0, |record| record.value.epoch))),
            Err(crate::state::StateError::Corrupt { location, reason }) => Ok(Err(format!(
                "the record of site {site} ({location}) cannot be used ({reason}): its epoch is unknown, so nothing is launched there until it is rewritten"
            ))),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use scheduler::model::SiteId;

    use crate::job::launch::launch_spec;
    use crate::job::launch::tests::{job, placement};

    #[tokio::test]
    async fn a_launch_carries_the_epoch_of_its_sites_record() {
        use crate::state::{EmbeddedStateStore, SiteRecord, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(EmbeddedStateStore::open(dir.path()).unwrap());
        let controller = crate::controller::Controller::new(
            std::collections::BTreeMap::new(),
            store.clone(),
            scheduler::input::Policy::default_two_sites(),
        );
        let site = SiteId("dc-a".into());
        assert_eq!(
            controller.site_epoch(&site).await.unwrap().unwrap(),
            0,
            "no record yet"
        );
        store
            .put_site(&SiteRecord {
                site: "dc-a".into(),
                epoch: 4,
                state: crate::state::SiteState::Active,
                detail: serde_json::Value::Null,
            })
            .await
            .unwrap();
        let epoch = controller.site_epoch(&site).await.unwrap().unwrap();
        assert_eq!(epoch, 4);
        let spec = launch_spec(&job(), 1, &placement(), None, None, epoch).unwrap();
        assert_eq!(spec.epoch, 4);
    }
}
