//! A request's parameters as CloudStack's servlet sees them.
//!
//! [`RawParams`] keeps every pair as sent (names in their case, values
//! decoded), from the query string and, for a form POST, the body: that is
//! what a signature covers. [`Params`] is what commands read: names
//! lowercased (so libcloud's `zoneId` works), `name[i].field` maps grouped,
//! control characters refused.

use std::collections::BTreeMap;

use crate::error::{ApiError, ErrorCode};

/// Every parameter pair of one request, decoded, names as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawParams(pub Vec<(String, String)>);

impl RawParams {
    /// The pairs of `query` (an undecoded `rawQueryString`) followed by those
    /// of `form` (an undecoded `application/x-www-form-urlencoded` body).
    pub fn parse(query: &str, form: Option<&[u8]>) -> Self {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some(body) = form {
            pairs.extend(
                form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        RawParams(pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect())
    }

    /// The first value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One entry of a map parameter: `tags[0].key=k&tags[0].value=v` gives
/// `{"key": "k", "value": "v"}` at index 0.
pub type MapEntry = BTreeMap<String, String>;

/// Parameters as commands read them: lowercased names, first value wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, String>,
    maps: BTreeMap<String, BTreeMap<u32, MapEntry>>,
}

impl Params {
    /// Lowercases names, groups `name[i].field` maps, and refuses what
    /// CloudStack refuses: a map key with two `[` (430), a malformed index
    /// (430), and control characters in any value (431).
    pub fn from_raw(raw: &RawParams) -> Result<Self, ApiError> {
        let mut p = Params::default();
        for (name, value) in &raw.0 {
            if value.chars().any(char::is_control) {
                return Err(ApiError::new(
                    ErrorCode::ParamError,
                    format!(
                        "Received value for parameter {name} is invalid, contains illegal ASCII non-printable characters"
                    ),
                ));
            }
            let name = name.to_lowercase();
            if let Some(open) = name.find('[') {
                let (map, entry) = parse_map_key(&name, open)?;
                p.maps
                    .entry(map)
                    .or_default()
                    .entry(entry.0)
                    .or_default()
                    .entry(entry.1)
                    .or_insert_with(|| value.clone());
            } else {
                p.values.entry(name).or_insert_with(|| value.clone());
            }
        }
        Ok(p)
    }

    /// The value of `name` (lowercase), if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` was given at all (even empty).
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name) || self.maps.contains_key(name)
    }

    /// The entries of map parameter `name`, in index order.
    pub fn map(&self, name: &str) -> Vec<&MapEntry> {
        self.maps
            .get(name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Every plain parameter name given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values
            .keys()
            .map(String::as_str)
            .chain(self.maps.keys().map(String::as_str))
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_lowercase(), value.to_string());
    }
}

fn malformed(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedParameter,
        format!(
            "Unable to decode parameter {name}; if specifying an object array, please use parameter[index].field=XXX, e.g. userGroupList[0].group=httpGroup"
        ),
    )
}

/// `tags[0].key` -> (`tags`, (0, `key`)).
fn parse_map_key(name: &str, open: usize) -> Result<(String, (u32, String)), ApiError> {
    let rest = &name[open + 1..];
    let (index, field) = rest.split_once(']').ok_or_else(|| malformed(name))?;
    let field = field.strip_prefix('.').ok_or_else(|| malformed(name))?;
    if field.contains('[') || field.contains(']') || field.is_empty() || open == 0 {
        return Err(malformed(name));
    }
    let index: u32 = index.parse().map_err(|_| malformed(name))?;
    Ok((name[..open].to_string(), (index, field.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body_are_merged_and_decoded() {
        let raw = RawParams::parse(
            "command=listZones&name=a%20b+c&apiKey=K",
            Some(b"password=p%7Ew&x=%2A"),
        );
        assert_eq!(raw.get("apikey"), Some("K"));
        assert_eq!(raw.get("name"), Some("a b c"));
        assert_eq!(raw.get("password"), Some("p~w"));
        assert_eq!(raw.get("x"), Some("*"));
        assert_eq!(raw.0.len(), 5);
    }

    #[test]
    fn names_are_case_insensitive_and_the_first_value_wins() {
        let p = Params::from_raw(&RawParams::parse("zoneId=z1&ZONEID=z2&Name=", None)).unwrap();
        assert_eq!(p.get("zoneid"), Some("z1"));
        assert_eq!(p.get("name"), None);
        assert!(p.has("name"));
    }

    #[test]
    fn maps_group_by_index() {
        let p = Params::from_raw(&RawParams::parse(
            "tags[1].key=b&tags[0].key=a&tags[0].value=1&tags[1].value=2&details[0].cpuNumber=2",
            None,
        ))
        .unwrap();
        let tags = p.map("tags");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["key"], "a");
        assert_eq!(tags[1]["value"], "2");
        assert_eq!(p.map("details")[0]["cpunumber"], "2");
    }

    #[test]
    fn malformed_map_keys_are_430() {
        for q in [
            "a[0][1].x=1",
            "a[x].y=1",
            "a[0]=1",
            "a[0.y=1",
            "[0].y=1",
            "a[0].=1",
        ] {
            let e = Params::from_raw(&RawParams::parse(q, None)).unwrap_err();
            assert_eq!(e.code.code(), 430, "{q}");
        }
    }

    #[test]
    fn control_characters_are_431() {
        for q in ["name=a%00b", "name=a%0Ab", "name=%7F", "name=a%C2%85"] {
            let e = Params::from_raw(&RawParams::parse(q, None)).unwrap_err();
            assert_eq!(e.code.code(), 431, "{q}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        for q in [
            "%",
            "%%%",
            "=&=&",
            "a=%ZZ",
            "&&&",
            "a=%C3%28",
            "\u{0}=\u{0}",
        ] {
            let raw = RawParams::parse(q, Some(q.as_bytes()));
            let _ = Params::from_raw(&raw);
        }
    }
}
