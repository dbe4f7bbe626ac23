//! Tolerations tolerate taints as `Toleration.ToleratesTaint` does, and the TaintToleration
//! plugin's filter and score are reproduced. Cases ported from
//! staging/src/k8s.io/api/core/v1/toleration_test.go and
//! pkg/scheduler/framework/plugins/tainttoleration/taint_toleration_test.go (the alpha
//! `Gt`/`Lt` toleration cases are left out: twinsite does not accept those operators).

use proptest::prelude::*;
use scheduler::k8s::{
    Taint, TaintEffect, Toleration, TolerationOperator, count_intolerable_prefer_no_schedule,
    find_untolerated_blocking_taint, normalized_taint_toleration_scores,
};

use TaintEffect::{NoExecute, NoSchedule, PreferNoSchedule};
use TolerationOperator::{Equal, Exists};

fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect,
    }
}

fn toleration(
    key: &str,
    operator: TolerationOperator,
    value: &str,
    effect: Option<TaintEffect>,
) -> Toleration {
    Toleration {
        key: key.into(),
        operator,
        value: value.into(),
        effect,
        toleration_seconds: None,
    }
}

#[test]
fn tolerates_taint_agrees_with_kubernetes_table() {
    // (description, toleration, taint, tolerated) from TestTolerationToleratesTaint.
    let cases = [
        (
            "same key and effect, Exists, taint has no value",
            toleration("foo", Exists, "", Some(NoSchedule)),
            taint("foo", "", NoSchedule),
            true,
        ),
        (
            "same key and effect, Exists, taint has some value",
            toleration("foo", Exists, "", Some(NoSchedule)),
            taint("foo", "bar", NoSchedule),
            true,
        ),
        (
            "same effect, empty key and Exists matches all taints",
            toleration("", Exists, "", Some(NoSchedule)),
            taint("foo", "bar", NoSchedule),
            true,
        ),
        (
            "same key, effect and value, Equal",
            toleration("foo", Equal, "bar", Some(NoSchedule)),
            taint("foo", "bar", NoSchedule),
            true,
        ),
        (
            "same key and effect, different values, Equal",
            toleration("foo", Equal, "value1", Some(NoSchedule)),
            taint("foo", "value2", NoSchedule),
            false,
        ),
        (
            "same key and value, different effects, Equal",
            toleration("foo", Equal, "bar", Some(NoSchedule)),
            taint("foo", "bar", NoExecute),
            false,
        ),
    ];
    for (description, toleration, taint, tolerated) in cases {
        assert_eq!(toleration.tolerates(&taint), tolerated, "{description}");
    }
}

#[test]
fn an_empty_toleration_effect_matches_every_effect() {
    for effect in [NoSchedule, PreferNoSchedule, NoExecute] {
        assert!(toleration("foo", Equal, "bar", None).tolerates(&taint("foo", "bar", effect)));
    }
}

#[test]
fn an_absent_operator_in_json_means_equal() {
    let toleration: Toleration =
        serde_json::from_str(r#"{"key":"dedicated","value":"flink","effect":"NoSchedule"}"#)
            .unwrap();
    assert_eq!(toleration.operator, Equal);
    assert!(toleration.tolerates(&taint("dedicated", "flink", NoSchedule)));
    assert!(!toleration.tolerates(&taint("dedicated", "batch", NoSchedule)));
}

#[test]
fn a_key_mismatch_is_never_tolerated_even_with_exists() {
    assert!(!toleration("foo", Exists, "", None).tolerates(&taint("bar", "", NoSchedule)));
}

/// TestTaintTolerationFilter: (name, tolerations, taints, schedulable).
#[test]
fn the_filter_blocks_exactly_where_the_taint_toleration_plugin_does() {
    let cases: Vec<(&str, Vec<Toleration>, Vec<Taint>, bool)> = vec![
        (
            "a pod having no tolerations can't be scheduled onto a node with nonempty taints",
            vec![],
            vec![taint("dedicated", "user1", NoSchedule)],
            false,
        ),
        (
            "a pod which can be scheduled on a dedicated node assigned to user1 with effect NoSchedule",
            vec![toleration("dedicated", Equal, "user1", Some(NoSchedule))],
            vec![taint("dedicated", "user1", NoSchedule)],
            true,
        ),
        (
            "a pod which can't be scheduled on a dedicated node assigned to user2 with effect NoSchedule",
            vec![toleration("dedicated", Equal, "user2", Some(NoSchedule))],
            vec![taint("dedicated", "user1", NoSchedule)],
            false,
        ),
        (
            "a toleration with operator Exists tolerates the taints on the node",
            vec![toleration("foo", Exists, "", Some(NoSchedule))],
            vec![taint("foo", "bar", NoSchedule)],
            true,
        ),
        (
            "multiple tolerations, multiple taints, all tolerated",
            vec![
                toleration("dedicated", Equal, "user2", Some(NoSchedule)),
                toleration("foo", Exists, "", Some(NoSchedule)),
            ],
            vec![
                taint("dedicated", "user2", NoSchedule),
                taint("foo", "bar", NoSchedule),
            ],
            true,
        ),
        (
            "key and value match but the (non-empty) effect doesn't",
            vec![toleration("foo", Equal, "bar", Some(PreferNoSchedule))],
            vec![taint("foo", "bar", NoSchedule)],
            false,
        ),
        (
            "key and value match, the toleration effect is empty, the taint is NoSchedule",
            vec![toleration("foo", Equal, "bar", None)],
            vec![taint("foo", "bar", NoSchedule)],
            true,
        ),
        (
            "key and value don't match but the taint is only PreferNoSchedule",
            vec![toleration("dedicated", Equal, "user2", Some(NoSchedule))],
            vec![taint("dedicated", "user1", PreferNoSchedule)],
            true,
        ),
        (
            "no toleration, but the taint is only PreferNoSchedule",
            vec![],
            vec![taint("dedicated", "user1", PreferNoSchedule)],
            true,
        ),
        (
            "an untolerated NoExecute taint blocks too",
            vec![],
            vec![taint("node.kubernetes.io/unreachable", "", NoExecute)],
            false,
        ),
    ];
    for (name, tolerations, taints, schedulable) in cases {
        let blocking = find_untolerated_blocking_taint(&taints, &tolerations);
        assert_eq!(blocking.is_none(), schedulable, "{name}: {blocking:?}");
    }
}

#[test]
fn the_filter_reports_the_first_untolerated_blocking_taint() {
    let taints = vec![
        taint("soft", "", PreferNoSchedule),
        taint("tolerated", "x", NoSchedule),
        taint("offline", "hdfs", NoSchedule),
        taint("also-bad", "", NoExecute),
    ];
    let tolerations = vec![toleration("tolerated", Exists, "", None)];
    assert_eq!(
        find_untolerated_blocking_taint(&taints, &tolerations),
        Some(&taints[2])
    );
    assert_eq!(taints[2].to_string(), "offline=hdfs:NoSchedule");
}

/// TestTaintTolerationScore: per case, the tolerations, each node's taints, and the
/// normalised scores Kubernetes expects.
#[test]
fn scores_agree_with_the_taint_toleration_plugin_after_normalisation() {
    /// (name, pod tolerations, each node's taints, expected normalised scores)
    type Case = (&'static str, Vec<Toleration>, Vec<Vec<Taint>>, Vec<i64>);
    let cases: Vec<Case> = vec![
        (
            "a node with taints tolerated by the pod scores higher than one with intolerable taints",
            vec![toleration("foo", Equal, "bar", Some(PreferNoSchedule))],
            vec![
                vec![taint("foo", "bar", PreferNoSchedule)],
                vec![taint("foo", "blah", PreferNoSchedule)],
            ],
            vec![100, 0],
        ),
        (
            "nodes whose taints are all tolerated score the same however many they have",
            vec![
                toleration("cpu-type", Equal, "arm64", Some(PreferNoSchedule)),
                toleration("disk-type", Equal, "ssd", Some(PreferNoSchedule)),
            ],
            vec![
                vec![],
                vec![taint("cpu-type", "arm64", PreferNoSchedule)],
                vec![
                    taint("cpu-type", "arm64", PreferNoSchedule),
                    taint("disk-type", "ssd", PreferNoSchedule),
                ],
            ],
            vec![100, 100, 100],
        ),
        (
            "the more intolerable taints a node has, the lower its score",
            vec![toleration("foo", Equal, "bar", Some(PreferNoSchedule))],
            vec![
                vec![],
                vec![taint("cpu-type", "arm64", PreferNoSchedule)],
                vec![
                    taint("cpu-type", "arm64", PreferNoSchedule),
                    taint("disk-type", "ssd", PreferNoSchedule),
                ],
            ],
            vec![100, 50, 0],
        ),
        (
            "only PreferNoSchedule taints and tolerations count",
            vec![
                toleration("cpu-type", Equal, "arm64", Some(NoSchedule)),
                toleration("disk-type", Equal, "ssd", Some(NoSchedule)),
            ],
            vec![
                vec![],
                vec![taint("cpu-type", "arm64", NoSchedule)],
                vec![
                    taint("cpu-type", "arm64", PreferNoSchedule),
                    taint("disk-type", "ssd", PreferNoSchedule),
                ],
            ],
            vec![100, 100, 0],
        ),
        (
            "no taints and no tolerations lands on the untainted node",
            vec![],
            vec![vec![], vec![taint("cpu-type", "arm64", PreferNoSchedule)]],
            vec![100, 0],
        ),
    ];
    for (name, tolerations, nodes, want) in cases {
        let counts: Vec<usize> = nodes
            .iter()
            .map(|taints| count_intolerable_prefer_no_schedule(taints, &tolerations))
            .collect();
        assert_eq!(normalized_taint_toleration_scores(&counts), want, "{name}");
    }
}

#[test]
fn validation_rejects_what_the_api_server_rejects() {
    let empty_key_equal = toleration("", Equal, "x", None);
    let error = empty_key_equal.validate().unwrap_err();
    assert_eq!(error.field, "operator");
    assert!(
        error
            .message
            .contains("operator must be Exists when `key` is empty")
    );

    let exists_with_value = toleration("foo", Exists, "bar", None);
    let error = exists_with_value.validate().unwrap_err();
    assert_eq!(error.field, "value");
    assert!(
        error
            .to_string()
            .contains("value must be empty when `operator` is 'Exists'")
    );

    let mut seconds_without_no_execute = toleration("foo", Exists, "", Some(NoSchedule));
    seconds_without_no_execute.toleration_seconds = Some(30);
    assert_eq!(
        seconds_without_no_execute.validate().unwrap_err().field,
        "effect"
    );

    let bad_key = toleration("dedicated pool", Exists, "", None);
    let error = bad_key.validate().unwrap_err();
    assert_eq!(error.field, "key");
    assert!(
        error
            .message
            .contains("name part must consist of alphanumeric characters")
    );

    let bad_value = toleration("dedicated", Equal, "flink/online", None);
    let error = bad_value.validate().unwrap_err();
    assert_eq!(error.field, "value");
    assert!(
        error
            .message
            .contains("a valid label must be an empty string"),
        "{error}"
    );

    assert_eq!(
        toleration("twinsite.io/offline", Equal, "hdfs", Some(PreferNoSchedule)).validate(),
        Ok(())
    );
    assert_eq!(toleration("", Exists, "", None).validate(), Ok(()));
    assert_eq!(toleration("foo", Equal, "", None).validate(), Ok(()));
    let mut evict_later = toleration("node.kubernetes.io/not-ready", Exists, "", Some(NoExecute));
    evict_later.toleration_seconds = Some(300);
    assert_eq!(evict_later.validate(), Ok(()));
}

fn any_effect() -> impl Strategy<Value = TaintEffect> {
    prop_oneof![Just(NoSchedule), Just(PreferNoSchedule), Just(NoExecute)]
}

fn any_taint() -> impl Strategy<Value = Taint> {
    ("[a-z]{0,3}", "[a-z]{0,3}", any_effect()).prop_map(|(key, value, effect)| Taint {
        key,
        value,
        effect,
    })
}

fn any_toleration() -> impl Strategy<Value = Toleration> {
    (
        "[a-z]{0,3}",
        prop_oneof![Just(Equal), Just(Exists)],
        "[a-z]{0,3}",
        proptest::option::of(any_effect()),
    )
        .prop_map(|(key, operator, value, effect)| Toleration {
            key,
            operator,
            value,
            effect,
            toleration_seconds: None,
        })
}

proptest! {
    #[test]
    fn exists_with_an_empty_key_and_no_effect_tolerates_every_taint(taint in any_taint()) {
        prop_assert!(toleration("", Exists, "", None).tolerates(&taint));
    }

    #[test]
    fn a_taint_is_never_ignored_by_the_filter(
        taints in proptest::collection::vec(any_taint(), 0..6),
        tolerations in proptest::collection::vec(any_toleration(), 0..4),
    ) {
        let untolerated_blocking = taints.iter().any(|t| {
            t.effect != PreferNoSchedule && !tolerations.iter().any(|tol| tol.tolerates(t))
        });
        prop_assert_eq!(
            find_untolerated_blocking_taint(&taints, &tolerations).is_some(),
            untolerated_blocking
        );
    }

    #[test]
    fn an_equal_toleration_tolerates_only_its_own_key_and_value(
        toleration in any_toleration(), taint in any_taint()
    ) {
        prop_assume!(toleration.operator == Equal && !toleration.key.is_empty());
        if toleration.tolerates(&taint) {
            prop_assert_eq!(&toleration.key, &taint.key);
            prop_assert_eq!(&toleration.value, &taint.value);
        }
    }

    #[test]
    fn normalised_taint_scores_stay_between_0_and_100_and_fall_as_counts_rise(
        counts in proptest::collection::vec(0usize..10, 1..8)
    ) {
        let scores = normalized_taint_toleration_scores(&counts);
        for (i, &score) in scores.iter().enumerate() {
            prop_assert!((0..=100).contains(&score));
            for (j, &other) in scores.iter().enumerate() {
                if counts[i] < counts[j] {
                    prop_assert!(score >= other);
                }
            }
        }
    }
}
