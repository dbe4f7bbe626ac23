//! Generations: the one rule for a job's next generation, and the grant by which the
//! controller's own launches (a new job, a spec change, a planned move, a relaunch after a
//! failure) ask the engine for theirs. The engine is the one owner of every generation change;
//! nothing else may compute one.

use scheduler::model::JobId;

use crate::engine::{Engine, FailoverPhase};

/// The largest generation twinsite launches: JSON readers that parse numbers as doubles
/// (kubectl's, a browser's) read every generation up to it exactly.
pub const MAX_GENERATION: u64 = scheduler::limits::MAX_GENERATION;

/// The generation after `current`, or `None` when `current` is the last one twinsite launches.
pub fn next_generation(current: u64) -> Option<u64> {
    current
        .checked_add(1)
        .filter(|next| *next <= MAX_GENERATION)
}

/// Why the engine refused the controller a generation. The controller waits and asks again
/// next pass (or, for `Exhausted`, records the job as failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefused {
    #[error(
        "the failover engine holds generation {generation} in {site}: its placement and generation are the engine's until it is done"
    )]
    Held {
        generation: u64,
        site: scheduler::model::SiteId,
    },
    #[error(
        "generation {current} is the largest twinsite launches ({MAX_GENERATION}): the job cannot be launched again; delete and re-create it"
    )]
    Exhausted { current: u64 },
}

impl Engine {
    /// The generation the controller may launch `job` as: the next after both `stored` (the
    /// one its record holds) and the engine's own, so no generation is ever issued twice,
    /// even to a job deleted and created again under its old name before the engine saw it
    /// gone. Refused while the engine fences, relaunches, moves or holds the job down.
    ///
    /// The grant changes nothing here: the caller must keep every other step of this engine
    /// out (the controller holds its driver) until the new generation is written to the
    /// job's record, and the engine adopts it from the record at its next step
    /// (`Event::JobsStored`), before deciding anything else. A write that did not happen
    /// leaves nothing to undo.
    pub fn grant_generation(&self, job: &JobId, stored: u64) -> Result<u64, GrantRefused> {
        let mut current = stored;
        if let Some(tracked) = self.job(job) {
            if !matches!(tracked.phase, FailoverPhase::Running) {
                return Err(GrantRefused::Held {
                    generation: tracked.generation,
                    site: tracked.site.clone(),
                });
            }
            current = current.max(tracked.generation);
        }
        next_generation(current).ok_or(GrantRefused::Exhausted { current })
    }
}
