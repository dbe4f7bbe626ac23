//! The one error type of every input parser: a list of problems, each naming the source
//! (file), the object inside it and the field path, so a person can go straight to the fix.

use std::fmt;

/// One thing wrong with an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// Where the text came from, usually a file name such as `jobs.yaml`.
    pub source: String,
    /// The object inside the source, e.g. `document 3 (trade/orders-enrich)` or
    /// `items[4] (node-a-0001)`; `None` when the problem concerns the whole source.
    pub object: Option<String>,
    /// Field path inside the object (or the source), e.g. `spec.taskManager.resources.memory`
    /// or `pools[1].offline.windows[0].timezone`; `None` when no single field is at fault.
    pub field: Option<String>,
    pub message: String,
}

impl InputProblem {
    pub fn new(
        source: impl Into<String>,
        object: Option<String>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        InputProblem {
            source: source.into(),
            object,
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one input, in the order found. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    problems: Vec<InputProblem>,
}

impl InputError {
    /// `None` when `problems` is empty, so an `InputError` always has something to say.
    pub fn from_problems(problems: Vec<InputProblem>) -> Option<Self> {
        if problems.is_empty() {
            None
        } else {
            Some(InputError { problems })
        }
    }

    pub fn single(problem: InputProblem) -> Self {
        InputError {
            problems: vec![problem],
        }
    }

    pub fn problems(&self) -> &[InputProblem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<InputProblem> {
        self.problems
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems while a parser walks an input, so that one run reports all of them.
#[derive(Debug)]
pub struct Problems {
    source: String,
    object: Option<String>,
    found: Vec<InputProblem>,
}

impl Problems {
    pub fn new(source: &str) -> Self {
        Problems {
            source: source.to_string(),
            object: None,
            found: Vec::new(),
        }
    }

    /// Problems recorded from now on concern `object` (e.g. `document 2 (ns/name)`).
    pub fn set_object(&mut self, object: Option<String>) {
        self.object = object;
    }

    pub fn field(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.found.push(InputProblem::new(
            self.source.clone(),
            self.object.clone(),
            Some(field.into()),
            message,
        ));
    }

    /// A problem with the object (or source) as a whole.
    pub fn whole(&mut self, message: impl Into<String>) {
        self.found.push(InputProblem::new(
            self.source.clone(),
            self.object.clone(),
            None,
            message,
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// The problems found as an error; `fallback` is said when none was recorded.
    pub fn into_error(mut self, fallback: &str) -> InputError {
        if self.found.is_empty() {
            self.whole(fallback);
        }
        InputError {
            problems: self.found,
        }
    }

    /// `Err` with every problem found, or `Ok(value)` when there were none.
    pub fn finish<T>(self, value: T) -> Result<T, InputError> {
        match InputError::from_problems(self.found) {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}
