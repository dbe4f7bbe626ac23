//! Generations: the engine is their one owner; the controller asks it for each launch of its
//! own (`Engine::grant_generation`), and no one goes past the last.

use super::prelude::*;

#[test]
fn the_controller_is_granted_the_generation_after_a_running_jobs_and_the_engine_adopts_it_from_the_store()
 {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    assert_eq!(h.engine.grant_generation(&job("j1"), 1), Ok(2));
    // The grant alone changes nothing: the engine adopts the generation once it is stored.
    assert_eq!(h.engine.job(&job("j1")).map(|r| r.generation), Some(1));
    h.step(
        Event::JobsStored(vec![StoredJob {
            id: job("j1"),
            placed: Some(PlacedJob {
                spec: spec("j1", Priority::Normal, FailoverMode::RestoreRequired, "b"),
                site: site("b"),
                generation: 2,
            }),
        }]),
        t(1),
    );
    let tracked = h.engine.job(&job("j1")).expect("still tracked");
    assert_eq!((tracked.generation, &tracked.site), (2, &site("b")));
    assert_eq!(h.engine.grant_generation(&job("j1"), 2), Ok(3));
}

#[test]
fn a_job_the_engine_does_not_track_yet_is_granted_the_generation_after_its_stored_one() {
    let h = Harness::new(|_| {});
    assert_eq!(h.engine.grant_generation(&job("new"), 0), Ok(1));
}

#[test]
fn no_generation_is_granted_while_the_engine_fences_or_relaunches_the_job() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(-3)));
    assert_eq!(h.lose_job_manager_node("j1", 1), vec![fence("j1", 1, "a")]);
    assert_eq!(
        h.engine.grant_generation(&job("j1"), 1),
        Err(GrantRefused::Held {
            generation: 1,
            site: site("a")
        }),
        "fencing"
    );
    assert_eq!(relaunches(&h.act(fenced("j1", 1, "a"), t(22))).len(), 1);
    assert_eq!(
        h.engine.grant_generation(&job("j1"), 2),
        Err(GrantRefused::Held {
            generation: 2,
            site: site("a")
        }),
        "relaunching"
    );
}

#[test]
fn a_generation_is_never_granted_twice_when_the_store_and_the_engine_disagree() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    // Deleted and created again under its name before the engine saw it gone: its record
    // starts at 0, and generation 1 was already issued to the old job.
    assert_eq!(h.engine.grant_generation(&job("j1"), 0), Ok(2));
    // Launched by the controller and not adopted yet: past the stored one.
    assert_eq!(h.engine.grant_generation(&job("j1"), 5), Ok(6));
    assert_eq!(
        h.engine.grant_generation(&job("j1"), MAX_GENERATION),
        Err(GrantRefused::Exhausted {
            current: MAX_GENERATION
        })
    );
}

#[test]
fn the_last_generation_is_never_exceeded_by_the_controller_nor_by_the_engine() {
    let mut h = Harness::new(|_| {});
    assert_eq!(next_generation(MAX_GENERATION - 1), Some(MAX_GENERATION));
    assert_eq!(next_generation(MAX_GENERATION), None);
    assert_eq!(next_generation(u64::MAX), None);
    h.step(
        Event::JobRegistered {
            spec: Box::new(spec(
                "j1",
                Priority::Normal,
                FailoverMode::RestoreRequired,
                "a",
            )),
            site: site("a"),
            generation: MAX_GENERATION,
        },
        t(0),
    );
    let refused = h.engine.grant_generation(&job("j1"), MAX_GENERATION);
    assert_eq!(
        refused,
        Err(GrantRefused::Exhausted {
            current: MAX_GENERATION
        })
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("delete and re-create it"),
        "the refusal says what to do"
    );

    // The engine's own relaunch after a lost JobManager node stops at the bound too: the job
    // is held down with the reason, not relaunched as a generation past it.
    h.complete("j1", checkpoint("a", MAX_GENERATION, 5, t(-3)));
    assert_eq!(
        h.lose_job_manager_node("j1", MAX_GENERATION),
        vec![fence("j1", MAX_GENERATION, "a")]
    );
    let after_fence = h.step(fenced("j1", MAX_GENERATION, "a"), t(22));
    assert_eq!(relaunches(&after_fence), vec![]);
    match &h.engine.job(&job("j1")).expect("tracked").phase {
        FailoverPhase::Down { reason } => {
            assert!(reason.contains("largest twinsite launches"), "{reason}")
        }
        phase => panic!("expected down at the last generation, got {phase:?}"),
    }
}
