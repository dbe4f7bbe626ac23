//! MILP improvement of the heuristic plan (good_lp + HiGHS) on aggregated node pools.

use std::time::Duration;

use super::{PlacementPlan, PlacementRequest};

pub(crate) fn improve(
    _req: &PlacementRequest,
    heuristic: PlacementPlan,
    _budget: Duration,
) -> PlacementPlan {
    heuristic
}
