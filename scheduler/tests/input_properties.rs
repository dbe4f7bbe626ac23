//! Invariants of the input parsers, checked on generated inputs.

use proptest::prelude::*;
use scheduler::generate::{GenerateParams, generate};
use scheduler::input::{parse_flink_plan, parse_policy, parse_stream_jobs};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the seed, the generator's output is valid input, and every job gets exactly
    /// enough TaskManagers for its slot need.
    #[test]
    fn every_generated_job_parses_and_gets_enough_task_managers(seed in any::<u64>()) {
        let generated = generate(&GenerateParams { sites: 2, nodes_per_site: 5, jobs: 30, seed }).unwrap();
        prop_assert!(parse_policy("policy.yaml", &generated.policy_yaml).is_ok());
        let jobs = parse_stream_jobs("jobs.yaml", &generated.jobs_yaml).unwrap();
        for job in &jobs {
            let need = job.slot_need().unwrap();
            let slots = u64::from(job.spec.task_manager.slots);
            let task_managers = u64::from(job.demand().unwrap().task_managers);
            prop_assert!(task_managers * slots >= need);
            prop_assert!((task_managers - 1) * slots < need);
        }
    }

    /// A plan's slot need lies between its widest vertex and the sum of all vertices.
    #[test]
    fn a_plan_needs_at_least_its_widest_vertex_and_at_most_all_of_them(
        vertices in prop::collection::vec((1u32..200, 0usize..3), 1..12)
    ) {
        let nodes: Vec<serde_json::Value> = vertices.iter().enumerate().map(|(i, (p, g))| {
            serde_json::json!({"id": i, "parallelism": p, "slotSharingGroup": format!("g{g}")})
        }).collect();
        let plan = parse_flink_plan("plan.json", &serde_json::json!({"nodes": nodes}).to_string()).unwrap();
        let need = plan.slot_need(1);
        let widest = u64::from(vertices.iter().map(|(p, _)| *p).max().unwrap());
        let sum: u64 = vertices.iter().map(|(p, _)| u64::from(*p)).sum();
        prop_assert!(need >= widest && need <= sum);
    }
}
