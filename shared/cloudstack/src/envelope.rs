//! Response envelopes as `ApiResponseSerializer` writes them: the key is the
//! lowercased command name plus `response`; a list carries `count` (all
//! matches, not the page) and its items under the item key, and an empty list
//! is `{}`; nulls are omitted; an error's HTTP status is its code. JSON when
//! the request says `response=json`, XML (CloudStack's default) otherwise.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The CloudStack release whose API Stratus speaks.
pub const CLOUDSTACK_VERSION: &str = "4.20.0.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// `response=json` (any case) is JSON; anything else is XML, CloudStack's default.
    pub fn from_param(response: Option<&str>) -> Self {
        match response {
            Some(r) if r.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Xml,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json; charset=UTF-8",
            Format::Xml => "text/xml; charset=UTF-8",
        }
    }
}

/// `listZones` -> `listzonesresponse`.
pub fn response_key(command: &str) -> String {
    format!("{}response", command.to_lowercase())
}

/// A list's inner object: `{"count": N, "<item>": [...]}`, or `{}` when empty.
pub fn list(item_key: &str, count: u64, items: Vec<Value>) -> Value {
    if items.is_empty() {
        return json!({});
    }
    let mut m = Map::new();
    m.insert("count".into(), json!(count));
    m.insert(item_key.into(), Value::Array(items));
    Value::Object(m)
}

/// One rendered answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The failure text, sent as `X-Description` as CloudStack does.
    pub description: Option<String>,
    /// `Set-Cookie` values (login and logout set the session cookies).
    pub set_cookies: Vec<String>,
}

/// A success: `{"<key>": inner}` with nulls removed.
pub fn ok(format: Format, key: &str, inner: Value) -> Response {
    Response {
        status: 200,
        content_type: format.content_type(),
        body: render(format, key, without_nulls(inner)),
        description: None,
        set_cookies: vec![],
    }
}

/// A failure under `<command>response`, or `errorresponse` when the command is unknown.
pub fn error(format: Format, key: &str, e: &ApiError) -> Response {
    Response {
        status: e.code.code(),
        content_type: format.content_type(),
        body: render(format, key, e.body()),
        description: Some(e.text.clone()),
        set_cookies: vec![],
    }
}

fn render(format: Format, key: &str, inner: Value) -> String {
    match format {
        Format::Json => {
            let mut m = Map::new();
            m.insert(key.into(), inner);
            Value::Object(m).to_string()
        }
        Format::Xml => {
            let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
            out.push_str(&format!(
                r#"<{key} cloud-stack-version="{CLOUDSTACK_VERSION}">"#
            ));
            xml_children(&inner, &mut out);
            out.push_str(&format!("</{key}>"));
            out
        }
    }
}

fn xml_children(v: &Value, out: &mut String) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            xml_element(k, v, out);
        }
    }
}

fn xml_element(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        // A list is its items, each under the list's name.
        Value::Array(items) => items.iter().for_each(|i| xml_element(name, i, out)),
        Value::Object(_) => {
            out.push_str(&format!("<{name}>"));
            xml_children(v, out);
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", xml_escape(s))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Removes null fields at every depth (Gson omits them).
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[test]
    fn a_list_has_the_total_count_and_an_empty_list_is_empty() {
        let r = ok(
            Format::Json,
            &response_key("listZones"),
            list(
                "zone",
                7,
                vec![json!({"id": "z", "name": "Z", "dns2": null})],
            ),
        );
        assert_eq!(
            r.body,
            r#"{"listzonesresponse":{"count":7,"zone":[{"id":"z","name":"Z"}]}}"#
        );
        assert_eq!(r.content_type, "application/json; charset=UTF-8");
        let r = ok(
            Format::Json,
            "listvirtualmachinesresponse",
            list("virtualmachine", 0, vec![]),
        );
        assert_eq!(r.body, r#"{"listvirtualmachinesresponse":{}}"#);
    }

    #[test]
    fn an_error_status_is_its_code() {
        let r = error(
            Format::Json,
            "errorresponse",
            &ApiError::unknown_command("frobnicate"),
        );
        assert_eq!(r.status, 432);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"errorresponse": {"uuidList": [], "errorcode": 432, "cserrorcode": 9999, "errortext": "Unknown API command: frobnicate"}})
        );
        assert_eq!(
            r.description.as_deref(),
            Some("Unknown API command: frobnicate")
        );
    }

    #[test]
    fn xml_is_the_default_and_escapes_text() {
        assert_eq!(Format::from_param(None), Format::Xml);
        assert_eq!(Format::from_param(Some("JSON")), Format::Json);
        let r = ok(
            Format::Xml,
            "listzonesresponse",
            list(
                "zone",
                2,
                vec![
                    json!({"id": "a", "name": "x<&>"}),
                    json!({"id": "b", "tags": []}),
                ],
            ),
        );
        assert_eq!(
            r.body,
            r#"<?xml version="1.0" encoding="UTF-8"?><listzonesresponse cloud-stack-version="4.20.0.0"><count>2</count><zone><id>a</id><name>x&lt;&amp;&gt;</name></zone><zone><id>b</id></zone></listzonesresponse>"#
        );
        assert_eq!(r.content_type, "text/xml; charset=UTF-8");
    }
}
