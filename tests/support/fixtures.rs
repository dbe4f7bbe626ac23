//! Small cluster shapes the controller tests share.

use std::collections::BTreeMap;

use scheduler::model::{JobId, JobPlacement, Node, PodPlacement, PodRole, Resources, SiteId};

/// A ready, untainted node with 8 cores and 32 GiB.
pub fn node(name: &str) -> Node {
    Node {
        owner_usage: None,
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

/// Puts `job`'s jar where its `jarURI` (`hdfs:///…`) points inside the site storage at
/// `site_root`: jobs launch only once the controller has published their jar, from a site's
/// storage, to every site.
pub fn upload_jar(site_root: &std::path::Path, job: &scheduler::input::StreamJob) {
    let jar = site_root.join(job.spec.jar_uri.trim_start_matches("hdfs:///"));
    std::fs::create_dir_all(jar.parent().unwrap()).unwrap();
    std::fs::write(jar, format!("PK {}", job.id())).unwrap();
}
