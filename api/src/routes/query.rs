//! Query-string parsing shared by the routes: unknown and repeated parameters are refused,
//! integers are range-checked, and every error names the parameter.

use std::collections::HashMap;

/// Parses a query string into parameters, refusing unknown and repeated ones.
pub(crate) fn params(query: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(format!("unknown query parameter `{key}` (allowed: {})", allowed.join(", ")));
        }
        if out.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(format!("query parameter `{key}` is given twice"));
        }
    }
    Ok(out)
}

/// An integer parameter within `range`, or `None` when absent.
pub(crate) fn int_param(
    params: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, String> {
    let Some(raw) = params.get(name) else { return Ok(None) };
    match raw.parse::<i64>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(format!(
            "query parameter `{name}` must be an integer from {} to {}, got {raw:?}",
            range.start(),
            range.end()
        )),
    }
}

/// A positive integer path parameter, or a message naming it.
pub(crate) fn path_id(name: &str, raw: &str) -> Result<i64, String> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("path parameter `{name}` must be a positive integer, got {raw:?}")),
    }
}

/// A path axum could not decode (e.g. percent-encoded bytes that are not UTF-8), in the API's
/// error shape rather than axum's plain text.
pub(crate) fn bad_path(rejection: axum::extract::rejection::PathRejection) -> crate::error::ApiError {
    crate::error::ApiError::invalid_parameter(format!(
        "the path's parameters cannot be read: {}",
        rejection.body_text()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_repeated_and_out_of_range_parameters_are_named() {
        let error = params(Some("limit=1&bogus=2"), &["limit"]).expect_err("unknown");
        assert!(error.contains("`bogus`"), "{error}");
        let error = params(Some("limit=1&limit=2"), &["limit"]).expect_err("twice");
        assert!(error.contains("given twice"), "{error}");
        let parsed = params(Some("limit=0"), &["limit"]).expect("known");
        let error = int_param(&parsed, "limit", 1..=200).expect_err("out of range");
        assert!(error.contains("`limit` must be an integer from 1 to 200, got \"0\""), "{error}");
        assert_eq!(int_param(&parsed, "before", 1..=5), Ok(None));
        assert_eq!(path_id("channel", "7"), Ok(7));
        let error = path_id("channel", "-3").expect_err("not positive");
        assert!(error.contains("path parameter `channel`"), "{error}");
    }
}
