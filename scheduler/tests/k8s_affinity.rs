//! nodeSelector and node affinity match as k8s.io/component-helpers' nodeaffinity package
//! does. Cases ported from its nodeaffinity_test.go (TestNodeSelectorMatch,
//! TestPreferredSchedulingTermsScore, TestPodMatchesNodeSelectorAndAffinityTerms) and from
//! apimachinery's label requirement semantics.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scheduler::k8s::{
    NodeAffinity, NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    PreferredSchedulingTerm, node_selector_map_matches, normalized_node_affinity_scores,
    preferred_affinity_score, required_node_affinity_matches, validate_node_selector_map,
};
use scheduler::model::{Node, Resources};

use NodeSelectorOperator::{DoesNotExist, Exists, Gt, In, Lt, NotIn};

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        owner_usage: None,
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new(1000, 1 << 30, 110),
    }
}

fn req(key: &str, operator: NodeSelectorOperator, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn exprs(requirements: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: requirements,
        match_fields: vec![],
    }
}

fn fields(requirements: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: vec![],
        match_fields: requirements,
    }
}

fn selector(terms: Vec<NodeSelectorTerm>) -> NodeSelector {
    NodeSelector {
        node_selector_terms: terms,
    }
}

fn required(terms: Vec<NodeSelectorTerm>) -> NodeAffinity {
    NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(selector(terms)),
        preferred_during_scheduling_ignored_during_execution: vec![],
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn node_selector_match_agrees_with_kubernetes_table() {
    // TestNodeSelectorMatch.
    let label_and_name = NodeSelectorTerm {
        match_expressions: vec![req("label_1", In, &["label_1_val"])],
        match_fields: vec![req("metadata.name", In, &["host_1"])],
    };
    assert!(
        !selector(vec![label_and_name.clone()]).matches(&node("host_1", &[])),
        "node matches field selector, but not labels"
    );
    assert!(
        selector(vec![label_and_name]).matches(&node("host_1", &[("label_1", "label_1_val")])),
        "node matches field selector and label selector"
    );
    assert!(
        selector(vec![
            exprs(vec![req("label_1", In, &["label_1_val"])]),
            fields(vec![req("metadata.name", In, &["host_1"])]),
        ])
        .matches(&node("host_1", &[])),
        "second term matches"
    );
}

#[test]
fn terms_kubernetes_cannot_parse_never_match_but_the_other_terms_still_may() {
    // TestNodeSelectorMatch "invalid field selector and label selector": terms 0 and 2 are
    // invalid (two values for a field; a key with a space), term 1 is fine.
    let terms = vec![
        fields(vec![req("metadata.name", In, &["host_1", "host_2"])]),
        NodeSelectorTerm {
            match_expressions: vec![req("label_1", In, &["label_1_val"])],
            match_fields: vec![req("metadata.name", In, &["host_1"])],
        },
        exprs(vec![req("invalid key", In, &["label_value"])]),
    ];
    let invalid_only = selector(vec![terms[0].clone(), terms[2].clone()]);
    assert!(!invalid_only.matches(&node("host_1", &[("invalid key", "label_value")])));
    assert!(selector(terms.clone()).matches(&node("host_1", &[("label_1", "label_1_val")])));

    let error = selector(terms.clone()).validate("required").unwrap_err();
    assert_eq!(
        error.field,
        "required.nodeSelectorTerms[0].matchFields[0].values"
    );
    let error = selector(vec![terms[2].clone()])
        .validate("required")
        .unwrap_err();
    assert_eq!(
        error.field,
        "required.nodeSelectorTerms[0].matchExpressions[0].key"
    );
    assert!(
        error
            .message
            .contains("name part must consist of alphanumeric characters"),
        "{error}"
    );
}

#[test]
fn preferred_terms_score_the_sum_of_matching_weights() {
    // TestPreferredSchedulingTermsScore "first and third term match".
    let affinity = NodeAffinity {
        required_during_scheduling_ignored_during_execution: None,
        preferred_during_scheduling_ignored_during_execution: vec![
            PreferredSchedulingTerm {
                weight: 5,
                preference: fields(vec![req("metadata.name", In, &["host_1"])]),
            },
            PreferredSchedulingTerm {
                weight: 7,
                preference: exprs(vec![req("unknown_label", In, &["unknown_label_val"])]),
            },
            PreferredSchedulingTerm {
                weight: 11,
                preference: exprs(vec![req("label_1", In, &["label_1_val"])]),
            },
        ],
    };
    let host = node("host_1", &[("label_1", "label_1_val")]);
    assert_eq!(preferred_affinity_score(Some(&affinity), &host), 16);
    assert_eq!(preferred_affinity_score(None, &host), 0);
}

#[test]
fn a_zero_weight_preferred_term_counts_for_nothing_even_when_invalid() {
    // TestPreferredSchedulingTermsScore "invalid field selector but no weight".
    let affinity = NodeAffinity {
        required_during_scheduling_ignored_during_execution: None,
        preferred_during_scheduling_ignored_during_execution: vec![PreferredSchedulingTerm {
            weight: 0,
            preference: fields(vec![req("metadata.name", In, &["host_1", "host_2"])]),
        }],
    };
    assert_eq!(
        preferred_affinity_score(Some(&affinity), &node("host_1", &[])),
        0
    );
}

/// TestPodMatchesNodeSelectorAndAffinityTerms: (name, nodeSelector, affinity, node name,
/// node labels, schedulable).
#[test]
fn pod_matches_node_selector_and_affinity_terms_as_kubernetes_does() {
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Option<NodeAffinity>,
        &'static str,
        Vec<(&'static str, &'static str)>,
        bool,
    );
    let cases: Vec<Case> = vec![
        ("no selector", vec![], None, "", vec![], true),
        (
            "missing labels",
            vec![("foo", "bar")],
            None,
            "",
            vec![],
            false,
        ),
        (
            "same labels",
            vec![("foo", "bar")],
            None,
            "",
            vec![("foo", "bar")],
            true,
        ),
        (
            "node labels are superset",
            vec![("foo", "bar")],
            None,
            "",
            vec![("foo", "bar"), ("baz", "blah")],
            true,
        ),
        (
            "node labels are subset",
            vec![("foo", "bar"), ("baz", "blah")],
            None,
            "",
            vec![("foo", "bar")],
            false,
        ),
        (
            "matchExpressions using In that matches",
            vec![],
            Some(required(vec![exprs(vec![req(
                "foo",
                In,
                &["bar", "value2"],
            )])])),
            "",
            vec![("foo", "bar")],
            true,
        ),
        (
            "matchExpressions using Gt that matches",
            vec![],
            Some(required(vec![exprs(vec![req(
                "kernel-version",
                Gt,
                &["0204"],
            )])])),
            "",
            vec![("kernel-version", "0206")],
            true,
        ),
        (
            "matchExpressions using NotIn that matches",
            vec![],
            Some(required(vec![exprs(vec![req(
                "mem-type",
                NotIn,
                &["DDR", "DDR2"],
            )])])),
            "",
            vec![("mem-type", "DDR3")],
            true,
        ),
        (
            "matchExpressions using Exists that matches",
            vec![],
            Some(required(vec![exprs(vec![req("GPU", Exists, &[])])])),
            "",
            vec![("GPU", "NVIDIA-GRID-K1")],
            true,
        ),
        (
            "affinity that doesn't match the node's labels",
            vec![],
            Some(required(vec![exprs(vec![req(
                "foo",
                In,
                &["value1", "value2"],
            )])])),
            "",
            vec![("foo", "bar")],
            false,
        ),
        (
            "an empty list of terms matches nothing",
            vec![],
            Some(required(vec![])),
            "",
            vec![("foo", "bar")],
            false,
        ),
        (
            "an empty matchExpressions term matches nothing",
            vec![],
            Some(required(vec![exprs(vec![])])),
            "",
            vec![("foo", "bar")],
            false,
        ),
        ("no affinity", vec![], None, "", vec![("foo", "bar")], true),
        (
            "affinity without a required selector",
            vec![],
            Some(NodeAffinity::default()),
            "",
            vec![("foo", "bar")],
            true,
        ),
        (
            "multiple matchExpressions ANDed that match",
            vec![],
            Some(required(vec![exprs(vec![
                req("GPU", Exists, &[]),
                req("GPU", NotIn, &["AMD", "INTER"]),
            ])])),
            "",
            vec![("GPU", "NVIDIA-GRID-K1")],
            true,
        ),
        (
            "multiple matchExpressions ANDed that don't match",
            vec![],
            Some(required(vec![exprs(vec![
                req("GPU", Exists, &[]),
                req("GPU", In, &["AMD", "INTER"]),
            ])])),
            "",
            vec![("GPU", "NVIDIA-GRID-K1")],
            false,
        ),
        (
            "multiple terms ORed, one matches",
            vec![],
            Some(required(vec![
                exprs(vec![req("foo", In, &["bar", "value2"])]),
                exprs(vec![req("diffkey", In, &["wrong", "value2"])]),
            ])),
            "",
            vec![("foo", "bar")],
            true,
        ),
        (
            "affinity and nodeSelector both satisfied",
            vec![("foo", "bar")],
            Some(required(vec![exprs(vec![req("foo", Exists, &[])])])),
            "",
            vec![("foo", "bar")],
            true,
        ),
        (
            "affinity matches but nodeSelector does not",
            vec![("foo", "bar")],
            Some(required(vec![exprs(vec![req("foo", Exists, &[])])])),
            "",
            vec![("foo", "barrrrrr")],
            false,
        ),
        (
            "an invalid value in the affinity term",
            vec![],
            Some(required(vec![exprs(vec![req(
                "foo",
                NotIn,
                &["invalid value: ___@#$%^"],
            )])])),
            "",
            vec![("foo", "bar")],
            false,
        ),
        (
            "matchFields In that matches the node",
            vec![],
            Some(required(vec![fields(vec![req(
                "metadata.name",
                In,
                &["node_1"],
            )])])),
            "node_1",
            vec![],
            true,
        ),
        (
            "matchFields In that does not match the node",
            vec![],
            Some(required(vec![fields(vec![req(
                "metadata.name",
                In,
                &["node_1"],
            )])])),
            "node_2",
            vec![],
            false,
        ),
        (
            "two terms: matchFields does not match, matchExpressions does",
            vec![],
            Some(required(vec![
                fields(vec![req("metadata.name", In, &["node_1"])]),
                exprs(vec![req("foo", In, &["bar"])]),
            ])),
            "node_2",
            vec![("foo", "bar")],
            true,
        ),
        (
            "one term: matchFields does not match, matchExpressions does",
            vec![],
            Some(required(vec![NodeSelectorTerm {
                match_expressions: vec![req("foo", In, &["bar"])],
                match_fields: vec![req("metadata.name", In, &["node_1"])],
            }])),
            "node_2",
            vec![("foo", "bar")],
            false,
        ),
        (
            "one term: both matchFields and matchExpressions match",
            vec![],
            Some(required(vec![NodeSelectorTerm {
                match_expressions: vec![req("foo", In, &["bar"])],
                match_fields: vec![req("metadata.name", In, &["node_1"])],
            }])),
            "node_1",
            vec![("foo", "bar")],
            true,
        ),
        (
            "two terms: neither matches",
            vec![],
            Some(required(vec![
                fields(vec![req("metadata.name", In, &["node_1"])]),
                exprs(vec![req("foo", In, &["not-match-to-bar"])]),
            ])),
            "node_2",
            vec![("foo", "bar")],
            false,
        ),
    ];
    for (name, node_selector, affinity, node_name, labels, want) in cases {
        let candidate = node(node_name, &labels);
        assert_eq!(
            required_node_affinity_matches(&map(&node_selector), affinity.as_ref(), &candidate),
            want,
            "{name}"
        );
    }
}

#[test]
fn each_operator_follows_label_requirement_semantics() {
    let labeled = node("n1", &[("zone", "a"), ("cores", "64"), ("gen", "x9")]);
    let matches = |r: NodeSelectorRequirement| selector(vec![exprs(vec![r])]).matches(&labeled);
    assert!(matches(req("zone", In, &["a", "b"])));
    assert!(!matches(req("zone", In, &["b"])));
    assert!(!matches(req("missing", In, &["a"])), "In needs the label");
    assert!(matches(req("zone", NotIn, &["b"])));
    assert!(!matches(req("zone", NotIn, &["a"])));
    assert!(
        matches(req("missing", NotIn, &["a"])),
        "NotIn holds without the label"
    );
    assert!(matches(req("zone", Exists, &[])));
    assert!(!matches(req("missing", Exists, &[])));
    assert!(matches(req("missing", DoesNotExist, &[])));
    assert!(!matches(req("zone", DoesNotExist, &[])));
    assert!(matches(req("cores", Gt, &["32"])));
    assert!(!matches(req("cores", Gt, &["64"])), "Gt is strict");
    // ParseInt would take a sign, but Kubernetes also checks every value's label-value
    // syntax, which must start with an alphanumeric: such a term never matches.
    assert!(!matches(req("cores", Lt, &["+65"])));
    assert!(!matches(req("cores", Gt, &["-1"])));
    assert!(
        matches(req("cores", Gt, &["007"])),
        "leading zeros are fine"
    );
    assert!(
        !matches(req("gen", Gt, &["1"])),
        "a non-integer label never compares"
    );
    assert!(!matches(req("missing", Lt, &["100"])));
    assert!(
        !matches(req("cores", Gt, &["1", "2"])),
        "Gt needs exactly one value"
    );
    assert!(!matches(req("cores", Gt, &["1.5"])), "Gt needs an integer");
    assert!(
        !matches(req("cores", Gt, &["9223372036854775808"])),
        "past int64"
    );
    assert!(
        !matches(req("zone", In, &[])),
        "In without values is unparseable"
    );
    assert!(
        !matches(req("zone", Exists, &["a"])),
        "Exists with values is unparseable"
    );
}

#[test]
fn match_fields_compare_the_node_name_and_nothing_else() {
    let n = node("worker-7", &[]);
    let matches = |r: NodeSelectorRequirement| selector(vec![fields(vec![r])]).matches(&n);
    assert!(matches(req("metadata.name", In, &["worker-7"])));
    assert!(matches(req("metadata.name", NotIn, &["worker-8"])));
    assert!(!matches(req("metadata.name", NotIn, &["worker-7"])));
    assert!(
        !matches(req("metadata.name", Exists, &[])),
        "only In/NotIn for fields"
    );
    assert!(
        !matches(req("metadata.uid", In, &["worker-7"])),
        "only metadata.name"
    );
}

#[test]
fn validation_names_the_field_path_of_each_problem() {
    let cases: Vec<(NodeAffinity, &str, &str)> = vec![
        (
            required(vec![exprs(vec![req("zone", In, &[])])]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values",
            "must be specified when `operator` is 'In' or 'NotIn'",
        ),
        (
            required(vec![
                exprs(vec![req("zone", In, &["a"])]),
                exprs(vec![req("zone", In, &["a"]), req("gpu", Exists, &["yes"])]),
            ]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[1].matchExpressions[1].values",
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        (
            required(vec![exprs(vec![req("cores", Gt, &["1", "2"])])]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values",
            "single value when `operator` is 'Lt' or 'Gt'",
        ),
        (
            required(vec![exprs(vec![req("cores", Lt, &["ten"])])]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]",
            "the value must be an integer",
        ),
        (
            required(vec![fields(vec![req("metadata.uid", In, &["x"])])]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key",
            "not a valid field selector key",
        ),
        (
            required(vec![fields(vec![req("metadata.name", Exists, &[])])]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].operator",
            "not a valid selector operator",
        ),
        (
            required(vec![]),
            "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "must have at least one node selector term",
        ),
        (
            NodeAffinity {
                required_during_scheduling_ignored_during_execution: None,
                preferred_during_scheduling_ignored_during_execution: vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: exprs(vec![req("zone", In, &["a"])]),
                    },
                    PreferredSchedulingTerm {
                        weight: 101,
                        preference: exprs(vec![req("zone", In, &["a"])]),
                    },
                ],
            },
            "preferredDuringSchedulingIgnoredDuringExecution[1].weight",
            "must be in the range 1-100",
        ),
        (
            NodeAffinity {
                required_during_scheduling_ignored_during_execution: None,
                preferred_during_scheduling_ignored_during_execution: vec![
                    PreferredSchedulingTerm {
                        weight: 1,
                        preference: exprs(vec![req("bad key!", Exists, &[])]),
                    },
                ],
            },
            "preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key",
            "name part must consist of alphanumeric characters",
        ),
    ];
    for (affinity, field, message) in cases {
        let error = affinity.validate().unwrap_err();
        assert_eq!(error.field, field);
        assert!(error.message.contains(message), "{error}");
        assert!(error.to_string().starts_with(field));
    }
}

#[test]
fn a_well_formed_affinity_validates() {
    let affinity: NodeAffinity = serde_json::from_str(
        r#"{
          "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
              {"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["dc-a-1", "dc-a-2"]},
                {"key": "node.kubernetes.io/instance-type", "operator": "NotIn", "values": ["tiny"]},
                {"key": "twinsite.io/cores", "operator": "Gt", "values": ["15"]},
                {"key": "spot", "operator": "DoesNotExist"}
              ]},
              {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n-1"]}]}
            ]
          },
          "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}
          ]
        }"#,
    )
    .unwrap();
    assert_eq!(affinity.validate(), Ok(()));
    let n = node(
        "n-2",
        &[
            ("topology.kubernetes.io/zone", "dc-a-2"),
            ("node.kubernetes.io/instance-type", "big"),
            ("twinsite.io/cores", "64"),
            ("ssd", ""),
        ],
    );
    assert!(required_node_affinity_matches(
        &BTreeMap::new(),
        Some(&affinity),
        &n
    ));
    assert_eq!(preferred_affinity_score(Some(&affinity), &n), 100);
}

#[test]
fn a_node_selector_map_needs_label_syntax_in_keys_and_values() {
    let good = map(&[
        ("twinsite.io/pool", "flink"),
        ("kubernetes.io/os", "linux"),
        ("ssd", ""),
    ]);
    assert_eq!(
        validate_node_selector_map(&good, "spec.nodeSelector"),
        Ok(())
    );

    let bad_key = map(&[("Pool/flink", "x")]);
    let error = validate_node_selector_map(&bad_key, "spec.nodeSelector").unwrap_err();
    assert_eq!(error.field, "spec.nodeSelector");
    assert!(error.message.contains("prefix part"), "{error}");

    let bad_value = map(&[("pool", "flink online")]);
    let error = validate_node_selector_map(&bad_value, "spec.nodeSelector").unwrap_err();
    assert_eq!(error.field, "spec.nodeSelector.pool");

    let too_long = "v".repeat(64);
    let long_value = map(&[("pool", too_long.as_str())]);
    let error = validate_node_selector_map(&long_value, "spec.nodeSelector").unwrap_err();
    assert!(
        error.message.contains("must be no more than 63 characters"),
        "{error}"
    );
}

#[test]
fn affinity_scores_normalise_to_the_best_node() {
    assert_eq!(
        normalized_node_affinity_scores(&[0, 5, 10]),
        vec![0, 50, 100]
    );
    assert_eq!(normalized_node_affinity_scores(&[0, 0]), vec![0, 0]);
    assert_eq!(
        normalized_node_affinity_scores(&[3, 7, 7]),
        vec![42, 100, 100]
    );
}

proptest! {
    #[test]
    fn an_empty_node_selector_map_matches_every_node(
        labels in proptest::collection::btree_map("[a-z]{1,4}", "[a-z]{0,4}", 0..5)
    ) {
        let n = Node { labels, ..node("n", &[]) };
        prop_assert!(node_selector_map_matches(&BTreeMap::new(), &n));
        prop_assert!(required_node_affinity_matches(&BTreeMap::new(), None, &n));
    }

    #[test]
    fn in_and_not_in_are_complements_when_the_label_exists(
        value in "[a-z]{1,3}", listed in proptest::collection::vec("[a-z]{1,3}", 1..4)
    ) {
        let n = node("n", &[("k", value.as_str())]);
        let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
        let in_match = selector(vec![exprs(vec![req("k", In, &listed)])]).matches(&n);
        let not_in_match = selector(vec![exprs(vec![req("k", NotIn, &listed)])]).matches(&n);
        prop_assert_ne!(in_match, not_in_match);
    }

    #[test]
    fn gt_and_lt_compare_as_integers(label in any::<i64>(), bound in 0..=i64::MAX) {
        let label_text = label.to_string();
        let bound_text = bound.to_string();
        let n = node("n", &[("v", label_text.as_str())]);
        prop_assert_eq!(
            selector(vec![exprs(vec![req("v", Gt, &[bound_text.as_str()])])]).matches(&n),
            label > bound
        );
        prop_assert_eq!(
            selector(vec![exprs(vec![req("v", Lt, &[bound_text.as_str()])])]).matches(&n),
            label < bound
        );
    }
}
