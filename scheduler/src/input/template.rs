//! Templated values of a StreamJob's per-site overrides (`spec.siteOverrides`): what a job
//! launched in a site may read about that launch, such as the site's name and when the
//! checkpoint it restores from completed, so a job moved to the other site reads its local
//! Kafka cluster and can seek to the time of the state it restored.
//!
//! Syntax (a small, shell-like one, chosen so ordinary Flink values stay literal):
//!
//! - `${site}`: the name of the site the launch runs in;
//! - `${restore.completedAt}`: when the checkpoint (or savepoint) the launch restores from
//!   completed, RFC 3339 in UTC with milliseconds (`2026-12-05T10:31:02.123Z`);
//! - `${restore.completedAtEpochMillis}`: the same instant in milliseconds since the Unix
//!   epoch (`1796466662123`);
//! - `${name:-text}`: `text` when the variable has no value: a launch that restores nothing
//!   (a fresh start), or whose restore time the controller does not know. Without `:-`, such
//!   a variable expands to nothing;
//! - `$$` is one literal `$`; a `$` followed by anything but `{` or `$` is literal too
//!   (`$HOME`, `a$b` stay as written).
//!
//! Unknown variables, an empty name and a `${` without its `}` are refused when the job is
//! admitted, naming the field, so a launch never meets one.

use chrono::{DateTime, SecondsFormat, Utc};

/// A variable a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    Site,
    RestoreCompletedAt,
    RestoreCompletedAtEpochMillis,
}

impl Variable {
    pub const ALL: [Variable; 3] = [
        Variable::Site,
        Variable::RestoreCompletedAt,
        Variable::RestoreCompletedAtEpochMillis,
    ];

    /// The name as written between `${` and `}`.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Site => "site",
            Variable::RestoreCompletedAt => "restore.completedAt",
            Variable::RestoreCompletedAtEpochMillis => "restore.completedAtEpochMillis",
        }
    }

    fn named(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// What the variables of one launch stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateValues {
    pub site: String,
    /// When the checkpoint the launch restores from completed; `None` for a fresh start (or
    /// a restore whose completion time is not known).
    pub restore_completed_at: Option<DateTime<Utc>>,
}

impl TemplateValues {
    fn value(&self, variable: Variable) -> Option<String> {
        match variable {
            Variable::Site => Some(self.site.clone()),
            Variable::RestoreCompletedAt => self
                .restore_completed_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Variable::RestoreCompletedAtEpochMillis => self
                .restore_completed_at
                .map(|at| at.timestamp_millis().to_string()),
        }
    }
}

/// Why a template cannot be read; `at` is the byte offset of the offending `$`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("\"${{\" at byte {at} has no closing \"}}\" (write \"$${{\" for a literal \"${{\")")]
    Unterminated { at: usize },
    #[error("\"${{}}\" at byte {at} names no variable; known: {}", known())]
    Empty { at: usize },
    #[error("unknown variable {name:?} at byte {at}; known: {}", known())]
    Unknown { name: String, at: usize },
}

fn known() -> String {
    Variable::ALL
        .iter()
        .map(|v| format!("${{{}}}", v.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Dollar,
    Variable {
        variable: Variable,
        default: Option<&'a str>,
    },
}

fn parse(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            pieces.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        let at = offset + i;
        if let Some(tail) = after.strip_prefix('$') {
            pieces.push(Piece::Dollar);
            rest = tail;
            offset = at + 2;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or(TemplateError::Unterminated { at })?;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() {
                return Err(TemplateError::Empty { at });
            }
            // A nested `${` means the first one was never closed where the writer thought.
            if default.is_some_and(|d| d.contains("${")) {
                return Err(TemplateError::Unterminated { at });
            }
            let variable = Variable::named(name).ok_or_else(|| TemplateError::Unknown {
                name: name.to_owned(),
                at,
            })?;
            pieces.push(Piece::Variable { variable, default });
            rest = &body[close + 1..];
            offset = at + 2 + close + 1;
        } else {
            pieces.push(Piece::Text("$"));
            rest = after;
            offset = at + 1;
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Checks that `text` is a template [`expand`] can read.
pub fn check(text: &str) -> Result<(), TemplateError> {
    parse(text).map(drop)
}

/// Whether `text` names any variable (a `${…}`); `$$` and lone `$` do not count.
pub fn names_variables(text: &str) -> bool {
    parse(text).map_or(true, |pieces| {
        pieces.iter().any(|p| matches!(p, Piece::Variable { .. }))
    })
}

/// `text` with every variable replaced by its value in `values`.
pub fn expand(text: &str, values: &TemplateValues) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in parse(text)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Dollar => out.push('$'),
            Piece::Variable { variable, default } => match values.value(variable) {
                Some(value) => out.push_str(&value),
                None => out.push_str(default.unwrap_or("")),
            },
        }
    }
    Ok(out)
}

/// `text` written so that [`expand`] gives it back unchanged: every `$` doubled.
pub fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn values(restore: Option<DateTime<Utc>>) -> TemplateValues {
        TemplateValues {
            site: "dc-b".into(),
            restore_completed_at: restore,
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 10, 31, 2).unwrap() + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn the_site_and_the_restore_time_in_both_spellings_are_expanded() {
        let v = values(Some(at()));
        assert_eq!(expand("kafka-${site}:9092", &v).unwrap(), "kafka-dc-b:9092");
        assert_eq!(
            expand("--from=${restore.completedAt}", &v).unwrap(),
            "--from=2026-12-05T10:31:02.123Z"
        );
        assert_eq!(
            expand("${restore.completedAtEpochMillis}", &v).unwrap(),
            at().timestamp_millis().to_string()
        );
    }

    #[test]
    fn a_fresh_start_takes_the_default_or_nothing() {
        let v = values(None);
        assert_eq!(
            expand("--from=${restore.completedAt:-earliest}", &v).unwrap(),
            "--from=earliest"
        );
        assert_eq!(
            expand("--from=${restore.completedAt}", &v).unwrap(),
            "--from="
        );
        // A variable with a value ignores its default.
        assert_eq!(expand("${site:-x}", &v).unwrap(), "dc-b");
    }

    #[test]
    fn dollars_that_start_no_variable_stay_literal() {
        let v = values(None);
        assert_eq!(expand("$HOME a$b $", &v).unwrap(), "$HOME a$b $");
        assert_eq!(expand("$${site}", &v).unwrap(), "${site}");
        assert_eq!(expand("$$$${site}", &v).unwrap(), "$${site}");
    }

    #[test]
    fn bad_templates_are_refused_with_the_place_and_the_known_names() {
        assert_eq!(
            check("ab${site"),
            Err(TemplateError::Unterminated { at: 2 })
        );
        assert_eq!(check("${}"), Err(TemplateError::Empty { at: 0 }));
        let error = check("x ${restore.time}").unwrap_err();
        assert_eq!(
            error,
            TemplateError::Unknown {
                name: "restore.time".into(),
                at: 2
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("${site}") && message.contains("${restore.completedAt}"),
            "{message}"
        );
        assert!(check("${site:-${site}}").is_err(), "no nesting");
        assert!(names_variables("${site}") && !names_variables("$$ $x"));
    }
}
