//! Redaction of secret-looking values in what the controller shows and records: the API's
//! job views and the audit log.
//!
//! A key is secret-looking when it matches, case-insensitively, one of `*password*`,
//! `*secret*`, `*token*`, `*key*` or a pattern of the policy's `redaction.keys` (`*` stands
//! for any run of characters). Three places of a StreamJob hold free-form settings and are
//! redacted by key: `spec.flinkConfiguration`, `metadata.annotations`, and `spec.args`
//! (`--name=value`, `-Dname=value`, `name=value`, or `--name` followed by its value). Free
//! text (audit entries) is redacted after any secret-looking word followed by `:` or `=`.
//!
//! Redaction must not break a GET-edit-PUT round trip: [`Redactor::restore`] puts the stored
//! value back wherever an incoming spec still carries the placeholder at a place redaction
//! put it, and refuses (naming the field) a placeholder anywhere it cannot stand for a
//! stored value, so the literal `<redacted>` is never stored as a secret.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Key patterns redacted whatever the policy says.
pub const BUILT_IN_PATTERNS: [&str; 4] = ["*password*", "*secret*", "*token*", "*key*"];

/// Characters a key in free text may consist of (Flink options, annotation names, flags).
const KEY_CHARS: &str = r"[A-Za-z0-9_.\-/]";

/// Decides what is secret and replaces it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Matches a whole key.
    key: Regex,
    /// Finds `<secret key> : value` or `<secret key> = value` in free text.
    text: Regex,
}

/// One value redaction replaces: where, and what it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// JSON pointer into the StreamJob object (`/spec/flinkConfiguration/s3.secret-key`).
    pub pointer: String,
    /// The field as messages name it (`spec.flinkConfiguration[s3.secret-key]`).
    pub field: String,
    /// The value as shown (`<redacted>`, `--password=<redacted>`).
    pub shown: String,
}

/// A placeholder in an incoming spec that stands for no stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: {REDACTED:?} keeps a stored secret only where a GET showed it for this job; here there is no stored value it could stand for (new job, new key, or the entry moved): send the value itself"
)]
pub struct PlaceholderError {
    pub field: String,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(&[])
    }
}

impl Redactor {
    /// The built-in patterns plus `extra` (the policy's `redaction.keys`, validated there:
    /// printable, without spaces, at most a few hundred characters each).
    pub fn new(extra: &[String]) -> Redactor {
        let patterns: Vec<&str> = BUILT_IN_PATTERNS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .collect();
        let glob = |pattern: &str, star: &str| {
            pattern
                .split('*')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(star)
        };
        let whole: Vec<String> = patterns.iter().map(|p| glob(p, ".*")).collect();
        let in_text: Vec<String> = patterns
            .iter()
            .map(|p| glob(p, &format!("{KEY_CHARS}*")))
            .collect();
        // Built from escaped literals and fixed fragments: always a valid expression, and
        // the regex crate matches in linear time, whatever the policy lists.
        let key = Regex::new(&format!("(?is)^(?:{})$", whole.join("|")))
            .expect("escaped glob patterns form a valid regex");
        let text = Regex::new(&format!(
            r#"(?i)({KEY_CHARS}*(?:{}){KEY_CHARS}*["']?\s*[:=]\s*)("(?:[^"\\\n]|\\.)*"?|[^,;}}\n]*)"#,
            in_text.join("|")
        ))
        .expect("escaped glob patterns form a valid regex");
        Redactor { key, text }
    }

    pub fn is_secret_key(&self, key: &str) -> bool {
        self.key.is_match(key)
    }

    /// Every value of `object` (a StreamJob as stored: apiVersion, kind, metadata, spec)
    /// that redaction replaces.
    pub fn redactions(&self, object: &Value) -> Vec<Redaction> {
        let mut found = Vec::new();
        for (base, field) in [
            ("/spec/flinkConfiguration", "spec.flinkConfiguration"),
            ("/metadata/annotations", "metadata.annotations"),
        ] {
            if let Some(Value::Object(map)) = object.pointer(base) {
                for key in map.keys().filter(|k| self.is_secret_key(k)) {
                    found.push(Redaction {
                        pointer: format!("{base}/{}", escape_pointer(key)),
                        field: format!("{field}[{key}]"),
                        shown: REDACTED.to_owned(),
                    });
                }
            }
        }
        if let Some(Value::Array(args)) = object.pointer("/spec/args") {
            for (index, shown) in self.redacted_args(args) {
                found.push(Redaction {
                    pointer: format!("/spec/args/{index}"),
                    field: format!("spec.args[{index}]"),
                    shown,
                });
            }
        }
        found
    }

    /// Which arguments are redacted, and how they are shown.
    fn redacted_args(&self, args: &[Value]) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        let mut value_follows = false;
        for (index, arg) in args.iter().enumerate() {
            let Some(arg) = arg.as_str() else {
                value_follows = false;
                continue;
            };
            if std::mem::take(&mut value_follows) && !arg.starts_with('-') {
                found.push((index, REDACTED.to_owned()));
                continue;
            }
            let flag_name = |text: &str| -> String {
                let name = text.trim_start_matches('-');
                match text.strip_prefix("-D") {
                    Some(property) if !text.starts_with("--") => property.to_owned(),
                    _ => name.to_owned(),
                }
            };
            match arg.split_once('=') {
                Some((name, _)) if self.is_secret_key(&flag_name(name)) => {
                    found.push((index, format!("{name}={REDACTED}")));
                }
                Some(_) => {}
                None => value_follows = arg.starts_with('-') && self.is_secret_key(&flag_name(arg)),
            }
        }
        found
    }

    /// Replaces every secret-looking value of a StreamJob object in place.
    pub fn redact_job(&self, object: &mut Value) {
        for redaction in self.redactions(object) {
            if let Some(value) = object.pointer_mut(&redaction.pointer) {
                *value = Value::String(redaction.shown);
            }
        }
    }

    /// Puts stored values back where `incoming` (a StreamJob object about to be stored)
    /// carries the placeholder exactly as a GET of `stored` showed it. Any other value
    /// containing the placeholder in a redactable place is refused, naming its field.
    pub fn restore(
        &self,
        incoming: &mut Value,
        stored: Option<&Value>,
    ) -> Result<(), PlaceholderError> {
        let shown: BTreeMap<String, String> = stored
            .map(|stored| {
                self.redactions(stored)
                    .into_iter()
                    .map(|r| (r.pointer, r.shown))
                    .collect()
            })
            .unwrap_or_default();
        for (pointer, field) in placeholder_places(incoming) {
            let as_shown = shown.get(&pointer);
            let original = stored.and_then(|s| s.pointer(&pointer));
            let incoming_value = incoming.pointer(&pointer).and_then(Value::as_str);
            match (as_shown, original) {
                (Some(as_shown), Some(original)) if incoming_value == Some(as_shown.as_str()) => {
                    let original = original.clone();
                    if let Some(slot) = incoming.pointer_mut(&pointer) {
                        *slot = original;
                    }
                }
                _ => return Err(PlaceholderError { field }),
            }
        }
        Ok(())
    }

    /// The fields of `object` that redaction covers and whose value holds the placeholder.
    /// Empty for every job the API stored: that is what [`Redactor::restore`] guarantees.
    pub fn placeholders(object: &Value) -> Vec<String> {
        placeholder_places(object)
            .into_iter()
            .map(|(_, field)| field)
            .collect()
    }

    /// Free text (an audit entry, an error message) with the value after every
    /// secret-looking word followed by `:` or `=` replaced, up to the next `,`, `;`, `}` or
    /// line end (or the closing quote of a quoted value).
    pub fn redact_text(&self, text: &str) -> String {
        self.redact_text_keeping(text, &[])
    }

    /// [`Redactor::redact_text`], except that a word equal to one of `keep`, or ending in
    /// `/` and one of them (the job an audit entry is about: `keyed-agg`, `shop/keyed-agg`),
    /// is not taken for a secret-looking key: messages name their object as `ns/name: ...`,
    /// and a job called `keyed-agg` is no secret.
    pub fn redact_text_keeping(&self, text: &str, keep: &[&str]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut from = 0;
        while let Some(captures) = self.text.captures_at(text, from) {
            let (Some(whole), Some(head)) = (captures.get(0), captures.get(1)) else {
                break;
            };
            let word = head.as_str().trim_end_matches(|c: char| {
                c == ':' || c == '=' || c == '"' || c == '\'' || c.is_whitespace()
            });
            let kept = |k: &&str| {
                !k.is_empty()
                    && (word == *k
                        || word
                            .strip_suffix(*k)
                            .is_some_and(|rest| rest.ends_with('/')))
            };
            if keep.iter().any(kept) {
                // Look for a key again just after this word (its value may hold one).
                from = head.end();
                continue;
            }
            out.push_str(&text[copied..head.end()]);
            out.push_str(REDACTED);
            copied = whole.end();
            // Every match starts before `head.end()`, so the search always moves on.
            from = whole.end();
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// The redactable places of `object` whose value contains the placeholder.
fn placeholder_places(object: &Value) -> Vec<(String, String)> {
    let mut places = Vec::new();
    for (base, field) in [
        ("/spec/flinkConfiguration", "spec.flinkConfiguration"),
        ("/metadata/annotations", "metadata.annotations"),
    ] {
        if let Some(Value::Object(map)) = object.pointer(base) {
            for (key, value) in map {
                if value.as_str().is_some_and(|v| v.contains(REDACTED)) {
                    places.push((
                        format!("{base}/{}", escape_pointer(key)),
                        format!("{field}[{key}]"),
                    ));
                }
            }
        }
    }
    if let Some(Value::Array(args)) = object.pointer("/spec/args") {
        for (index, arg) in args.iter().enumerate() {
            if arg.as_str().is_some_and(|v| v.contains(REDACTED)) {
                places.push((format!("/spec/args/{index}"), format!("spec.args[{index}]")));
            }
        }
    }
    places
}

/// A key as one JSON pointer segment (RFC 6901).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn job(config: Value, args: Value) -> Value {
        json!({
            "apiVersion": "twinsite.io/v1alpha1",
            "kind": "StreamJob",
            "metadata": {"name": "orders", "namespace": "shop",
                         "annotations": {"vault.example/api-token": "t0k", "owner": "ads"}},
            "spec": {"parallelism": 2, "flinkConfiguration": config, "args": args,
                     "placement": {"tolerations": [{"key": "dedicated", "value": "flink"}]}}
        })
    }

    #[test]
    fn the_issues_keys_are_secret_in_any_case_and_others_are_not() {
        let redactor = Redactor::default();
        for key in [
            "s3.secret-key",
            "S3.SECRET-KEY",
            "security.ssl.keystore-password",
            "fs.azure.account.key.x.blob.core.windows.net",
            "kafka.sasl.token",
            "Password",
        ] {
            assert!(redactor.is_secret_key(key), "{key}");
        }
        for key in [
            "parallelism.default",
            "state.backend.type",
            "s3.endpoint",
            "",
        ] {
            assert!(!redactor.is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn policy_patterns_add_to_the_built_in_ones_and_are_globs_not_regexes() {
        let redactor = Redactor::new(&[
            "fs.oss.accessKeyId".into(),
            "*.credentials.*".into(),
            "a.b+".into(),
        ]);
        assert!(redactor.is_secret_key("FS.OSS.ACCESSKEYID"));
        assert!(redactor.is_secret_key("gcs.credentials.json"));
        assert!(redactor.is_secret_key("a.b+"));
        assert!(
            !redactor.is_secret_key("a.bb"),
            "`+` is a literal, not a regex operator"
        );
        assert!(!redactor.is_secret_key("fs.oss.endpoint"));
    }

    #[test]
    fn a_job_shows_its_secrets_as_the_placeholder_and_keeps_everything_else() {
        let mut object = job(
            json!({"s3.secret-key": "hunter2", "s3.endpoint": "http://minio:9000"}),
            json!([
                "--input",
                "kafka",
                "--db-password",
                "pw1",
                "--api-key=k1",
                "-Ds3.access-key=ak",
                "--verbose"
            ]),
        );
        Redactor::default().redact_job(&mut object);
        let text = object.to_string();
        for secret in ["hunter2", "pw1", "k1", "ak", "t0k"] {
            assert!(
                !text.contains(&format!("\"{secret}\"")) && !text.contains(&format!("={secret}\"")),
                "{secret} in {text}"
            );
        }
        assert_eq!(
            object["spec"]["flinkConfiguration"]["s3.endpoint"],
            "http://minio:9000"
        );
        assert_eq!(
            object["spec"]["args"],
            json!([
                "--input",
                "kafka",
                "--db-password",
                REDACTED,
                "--api-key=<redacted>",
                "-Ds3.access-key=<redacted>",
                "--verbose"
            ])
        );
        assert_eq!(object["metadata"]["annotations"]["owner"], "ads");
        // Structural fields named `key` (tolerations, selectors) are not free-form settings.
        assert_eq!(
            object["spec"]["placement"]["tolerations"][0]["key"],
            "dedicated"
        );
    }

    #[test]
    fn a_placeholder_where_no_stored_value_exists_is_refused_naming_the_field() {
        let redactor = Redactor::default();
        let stored = job(json!({"s3.secret-key": "hunter2"}), json!([]));
        let mut renamed = job(json!({"s3.secret-key-2": REDACTED}), json!([]));
        let err = redactor.restore(&mut renamed, Some(&stored)).unwrap_err();
        assert_eq!(err.field, "spec.flinkConfiguration[s3.secret-key-2]");
        let mut new_job = job(json!({"s3.secret-key": REDACTED}), json!([]));
        assert!(redactor.restore(&mut new_job, None).is_err());
        let mut moved = job(json!({}), json!(["--x", "--password", REDACTED]));
        let stored_args = job(json!({}), json!(["--password", "pw"]));
        assert_eq!(
            redactor
                .restore(&mut moved, Some(&stored_args))
                .unwrap_err()
                .field,
            "spec.args[2]"
        );
    }

    #[test]
    fn free_text_loses_the_value_after_a_secret_looking_word() {
        let redactor = Redactor::new(&["*.credentials".into()]);
        assert_eq!(
            redactor.redact_text("request body: spec.flinkConfiguration.s3.secret-key: invalid type: integer `12345`, expected a string"),
            "request body: spec.flinkConfiguration.s3.secret-key: <redacted>, expected a string"
        );
        assert_eq!(
            redactor.redact_text(r#"{"password": "a,b\"c", "user": "bob"}"#),
            r#"{"password": <redacted>, "user": "bob"}"#
        );
        assert_eq!(
            redactor.redact_text("gcs.credentials=xyz; ok"),
            "gcs.credentials=<redacted>; ok"
        );
        assert_eq!(
            redactor.redact_text("create shop/orders: ok"),
            "create shop/orders: ok"
        );
        let message =
            "request body: shop/keyed-agg: spec.flinkConfiguration.db.password: bad `pw`, expected";
        assert_eq!(
            redactor.redact_text_keeping(message, &["keyed-agg"]),
            "request body: shop/keyed-agg: spec.flinkConfiguration.db.password: <redacted>, expected"
        );
        assert_eq!(
            redactor.redact_text_keeping("shop/password: db.password: pw", &["password"]),
            "shop/password: db.password: <redacted>"
        );
    }

    fn config_entries() -> impl Strategy<Value = BTreeMap<String, String>> {
        let key = prop_oneof![
            "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}",
            "[a-z]{1,4}\\.(secret|password|token|key|Key)[a-z-]{0,4}",
        ];
        proptest::collection::btree_map(key, "[ -~]{0,12}", 0..8)
    }

    proptest! {
        /// What a GET shows, PUT back unchanged, stores exactly what was stored; and no
        /// secret-looking entry is shown with its value.
        #[test]
        fn a_redacted_job_put_back_restores_every_stored_value(
            config in config_entries(),
            args in proptest::collection::vec(prop_oneof![
                "--[a-z]{1,8}", "--(password|api-key|token)", "--[a-z-]{1,10}=[a-z0-9]{0,6}", "[a-z0-9]{1,6}",
            ], 0..8),
        ) {
            let redactor = Redactor::default();
            let stored = job(serde_json::to_value(&config).unwrap(), json!(args));
            let mut shown = stored.clone();
            redactor.redact_job(&mut shown);
            for (key, value) in &config {
                let shown_value = &shown["spec"]["flinkConfiguration"][key];
                if redactor.is_secret_key(key) {
                    prop_assert_eq!(shown_value, REDACTED);
                } else {
                    prop_assert_eq!(shown_value, value.as_str());
                }
            }
            let mut put_back = shown.clone();
            // A value that itself contained the placeholder cannot be told apart from one:
            // it is refused rather than guessed.
            match redactor.restore(&mut put_back, Some(&stored)) {
                Ok(()) => prop_assert_eq!(&put_back, &stored),
                Err(error) => prop_assert!(stored.to_string().contains(REDACTED), "{}", error),
            }
        }
    }
}
