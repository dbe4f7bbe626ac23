//! A minimal checker of an object against a CRD's structural `openAPIV3Schema`, with the API
//! server's semantics rather than plain JSON Schema's: a field the schema does not declare
//! is an error (the API server would prune it silently, so configuration twinsite wrote
//! would be lost) unless the node has `x-kubernetes-preserve-unknown-fields`;
//! `x-kubernetes-int-or-string` takes an integer or a string; `type`, `enum`, `required`,
//! `items`, `additionalProperties`, `anyOf` and `nullable` as in Kubernetes' structural
//! schemas. Formats and patterns are not checked (the operator's CRD declares none).

use serde_json::Value;

/// Every violation, each with the JSON path of the offending value. At the root,
/// `apiVersion`, `kind` and `metadata` are the API server's own (a CRD schema need not
/// declare them; `metadata` is validated as `ObjectMeta`).
pub fn violations(schema: &Value, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            map.remove(key);
        }
    }
    check(schema, &body, "$", &mut out);
    out
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            out.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            out.push(format!(
                "{path}: expected an integer or a string, found {value}"
            ));
        }
        return;
    }
    if let Some(any_of) = schema["anyOf"].as_array() {
        let fits = any_of.iter().any(|alternative| {
            let mut inner = Vec::new();
            check(alternative, value, path, &mut inner);
            inner.is_empty()
        });
        if !fits {
            out.push(format!("{path}: {value} matches none of anyOf"));
        }
    }
    if let Some(expected) = schema["type"].as_str()
        && !type_matches(expected, value)
    {
        out.push(format!("{path}: expected {expected}, found {value}"));
        return;
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        out.push(format!(
            "{path}: {value} is not one of {}",
            Value::Array(values.clone())
        ));
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if let Some(field) = required.as_str()
                && !object.contains_key(field)
            {
                out.push(format!("{path}.{field}: required"));
            }
        }
        let properties = schema["properties"].as_object();
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
        for (key, child) in object {
            let child_path = format!("{path}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(child_schema) => check(child_schema, child, &child_path, out),
                None => match &schema["additionalProperties"] {
                    Value::Object(_) => {
                        check(&schema["additionalProperties"], child, &child_path, out)
                    }
                    Value::Bool(true) => {}
                    _ if preserve => {}
                    _ if properties.is_none() && schema["type"].is_null() => {}
                    _ => out.push(format!(
                        "{child_path}: unknown field (the API server would drop it)"
                    )),
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(items, item, &format!("{path}[{index}]"), out);
        }
    }
}
