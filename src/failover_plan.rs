//! The dry run of an ops-triggered failover: the failover engine (`failover` crate) is fed
//! the controller's state (each placed job, its generation and the checkpoints replicated to
//! each site) and asked for the plan it would follow, with the scheduler as its placer. The
//! plan says what moves where, what does not fit and why, and the expected RPO per job;
//! nothing is changed.

use failover::{
    CheckpointKind as EngineCheckpointKind, CheckpointPointer as EngineCheckpoint, Engine,
    EngineConfig, Event, FailoverPlan, MoveMode,
};
use scheduler::input::streamjob;
use scheduler::model::{JobPlacement, SiteId};

use crate::controller::Controller;
use crate::state::{CheckpointKind, StateError};

/// The scheduler as the engine's placer (one adapter, in the failover crate, shared with
/// the simulation).
pub use failover::sim::SchedulerPlacer;

/// The plan a failover from `from` to `to` would follow now.
pub async fn dry_run(
    controller: &Controller,
    from: &SiteId,
    to: &SiteId,
    mode: MoveMode,
) -> Result<FailoverPlan, StateError> {
    let now = chrono::Utc::now();
    let site_ids: Vec<SiteId> = controller.sites.keys().cloned().collect();
    let mut engine = Engine::new(EngineConfig::new(site_ids), now);
    let mut snapshots = Vec::new();
    for site in controller.sites.values() {
        if let Ok(snapshot) = site.snapshot().await {
            snapshots.push(snapshot);
        }
    }
    let mut running = Vec::new();
    let mut demands = Vec::new();
    let mut events = Vec::new();
    for record in controller.store.list_jobs().await? {
        let (Some(stored), Some((spec, stream_mode))) = (
            &record.value.placement,
            crate::controller::failover::engine_spec(&record.value),
        ) else {
            continue;
        };
        if let Ok(p) = serde_json::from_value::<JobPlacement>(stored.detail.clone()) {
            running.push(p);
        }
        demands.push(spec.demand.clone());
        // Jobs that opted out of relaunch stay out of site failover.
        if stream_mode == streamjob::FailoverMode::None {
            continue;
        }
        let id = spec.demand.id.clone();
        let generation = record.value.generation;
        events.push(Event::JobRegistered {
            spec: Box::new(spec),
            site: SiteId(stored.site.clone()),
            generation,
        });
        for entry in controller
            .store
            .list_checkpoints(&record.value.namespace, &record.value.name)
            .await?
        {
            if entry.kind != CheckpointKind::Replicated {
                continue;
            }
            let pointer = entry.pointer.value;
            events.push(Event::CheckpointReplicated {
                job: id.clone(),
                replica: EngineCheckpoint {
                    site: SiteId(entry.site.clone()),
                    generation,
                    id: pointer.checkpoint_id,
                    path: pointer.uri,
                    completed_at: chrono::DateTime::from_timestamp_millis(
                        pointer.recorded_at_unix_ms,
                    )
                    .unwrap_or(now),
                    kind: EngineCheckpointKind::Checkpoint,
                },
            });
        }
    }
    let placer = SchedulerPlacer::new(
        snapshots,
        running,
        demands,
        &controller.policy.placement_policy(),
        now,
    );
    for event in events {
        // Feeding state: the commands it answers with (persist, audit) are not executed.
        let _ = engine.step(event, now, &placer);
    }
    Ok(engine.plan(from, to, mode, false, now, &placer))
}
