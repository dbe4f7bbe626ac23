//! Small cluster shapes the controller tests share.

use std::collections::BTreeMap;

use scheduler::model::{JobId, JobPlacement, Node, PodPlacement, PodRole, Resources, SiteId};

/// A ready, untainted node with 8 cores and 32 GiB.
pub fn node(name: &str) -> Node {
    Node {
        name: name.to_owned(),
        labels: BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())]),
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new(8_000, 32 << 30, 110),
    }
}

/// `job` in `site`: its JobManager on `job_manager`, one TaskManager on each of `task_managers`.
pub fn placement(
    job: &JobId,
    site: &str,
    job_manager: &str,
    task_managers: &[&str],
) -> JobPlacement {
    let mut pods = vec![PodPlacement {
        role: PodRole::Jobmanager,
        index: 0,
        node: job_manager.into(),
    }];
    pods.extend(task_managers.iter().enumerate().map(|(i, n)| PodPlacement {
        role: PodRole::Taskmanager,
        index: i as u32,
        node: (*n).into(),
    }));
    JobPlacement {
        job: job.clone(),
        site: SiteId(site.into()),
        pods,
    }
}
