//! The `localFlink` section: policy sites run as Flink processes on this machine, their capacity.
//! Must never: start Flink; `crate::site::local_flink` runs the sites this names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scheduler::input::{Policy, Problems};

use super::file::{LocalFlinkSpec, SimulatedSiteFiles};
use super::resolved::LocalFlinkConfig;

/// `None` when the section is absent or any of it is bad (every problem is reported).
pub(super) fn resolve_local_flink(
    spec: Option<&LocalFlinkSpec>,
    policy: Option<&Policy>,
    simulated_sites: &BTreeMap<String, SimulatedSiteFiles>,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<LocalFlinkConfig> {
    let spec = spec?;
    let mut ok = true;
    for (i, name) in spec.sites.iter().enumerate() {
        let field = format!("localFlink.sites[{i}]");
        match policy.map(|p| p.site(&scheduler::model::SiteId(name.clone()))) {
            Some(None) => {
                problems.field(field.clone(), format!("the policy has no site {name:?}"));
                ok = false;
            }
            Some(Some(site)) if site.kubernetes.is_some() => {
                problems.field(
                    field.clone(),
                    format!("site {name:?} is a Kubernetes site in the policy"),
                );
                ok = false;
            }
            _ => {}
        }
        if simulated_sites.contains_key(name) {
            problems.field(
                field,
                format!("site {name:?} also has simulation.sites files; choose one kind"),
            );
            ok = false;
        }
    }
    let cpu = scheduler::k8s::Quantity::new(spec.cpu.clone())
        .milli_value()
        .ok()
        .filter(|v| *v > 0);
    let memory = scheduler::k8s::Quantity::new(spec.memory.clone())
        .value()
        .ok()
        .filter(|v| *v > 0);
    if cpu.is_none() {
        problems.field("localFlink.cpu", format!("not a quantity: {:?}", spec.cpu));
    }
    if memory.is_none() {
        problems.field(
            "localFlink.memory",
            format!("not a quantity: {:?}", spec.memory),
        );
    }
    Some(LocalFlinkConfig {
        python: absolute(&spec.python),
        sites: spec.sites.clone(),
        capacity: scheduler::model::Resources::new(cpu?, memory?, 110),
    })
    .filter(|_| ok)
}
