//! Durability and rounds: state persisted before the action it leads to, answers judged once
//! per round, and records written by older versions.

use super::prelude::*;

#[test]
fn every_action_is_preceded_by_the_persisted_state_that_led_to_it() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    h.keep_alive(t(21));
    h.observe(
        "a",
        t(21),
        &[(1, t(0))],
        vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
    );
    let commands = h.step(fenced("j1", 1, "a"), t(22));
    let relaunch_at = commands
        .iter()
        .position(|c| matches!(c, Command::Relaunch { .. }))
        .unwrap();
    let persisted_gen2 = commands[..relaunch_at]
        .iter()
        .any(|c| matches!(c, Command::Persist(Record::Job(j)) if j.generation == 2));
    assert!(persisted_gen2, "{commands:?}");
}

#[test]
fn answers_fed_together_relaunch_the_same_jobs_in_the_same_order_with_fewer_writes_than_answers_fed_one_by_one()
 {
    let run = |together: bool| {
        let mut h = Harness::new(|c| c.max_in_flight = 1);
        let mut round = lose_site_b(&mut h);
        let mut launched = Vec::new();
        let mut writes = 0;
        while !round.is_empty() {
            launched.extend(relaunches(&round));
            writes += round
                .iter()
                .filter(|c| matches!(c, Command::Persist(_)))
                .count();
            let answers = launch_answers(&round);
            round = if together {
                h.step_all(answers, t(92))
            } else {
                answers.into_iter().flat_map(|a| h.step(a, t(92))).collect()
            };
        }
        (launched, h.store, writes)
    };
    let (one_by_one, store_one_by_one, writes_one_by_one) = run(false);
    let (together, store_together, writes_together) = run(true);
    assert_eq!(one_by_one.len(), 4, "{one_by_one:?}");
    assert_eq!(together, one_by_one);
    assert_eq!(store_together, store_one_by_one);
    assert!(
        writes_together <= writes_one_by_one,
        "{writes_together} > {writes_one_by_one}"
    );
}

#[test]
fn a_round_of_answers_is_judged_once_so_every_record_is_written_once_per_round() {
    let mut h = Harness::new(|c| c.max_in_flight = 8);
    let round = lose_site_b(&mut h);
    assert_eq!(relaunches(&round).len(), 4);
    let next = h.step_all(launch_answers(&round), t(92));
    let mut keys: Vec<String> = next
        .iter()
        .filter_map(|c| match c {
            Command::Persist(r) => Some(key(r)),
            _ => None,
        })
        .collect();
    let written = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), written, "a record written twice in one round");
    assert!(
        keys.iter().any(|k| k.starts_with("op")),
        "the finished operation is recorded: {keys:?}"
    );
}

/// A store keeps what earlier versions wrote. These records were written (by the flows of
/// `lose_site_b`, a planned switchover stopped with a savepoint, and a JobManager node loss)
/// before the engine's types were renamed (issue #15): every one reads back and writes again
/// byte for byte, and a new leader resumes from those of one engine without changing them.
#[test]
fn records_written_before_the_engine_types_were_renamed_read_back_and_write_byte_for_byte() {
    let text = include_str!("../fixtures/engine-records-before-renames.jsonl");
    let records: Vec<Record> = text
        .lines()
        .map(|line| {
            let record: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{e}: a stored record no longer reads: {line}"));
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
            record
        })
        .collect();
    assert_eq!(records.len(), 14);
    // The first nine are one engine's records (a site loss in progress).
    let one_engine: BTreeSet<String> = text.lines().take(9).map(str::to_string).collect();
    let (engine, _) = Engine::resume(
        EngineConfig::new(vec![site("a"), site("b")]),
        records.into_iter().take(9),
        t(100),
    );
    let resumed: BTreeSet<String> = engine
        .records()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(resumed, one_engine);
}
