//! apiKey/secretKey request signatures, as `ApiServer.verifyRequest` checks them.
//!
//! The canonical string: every parameter but `signature`, sorted by name,
//! each `name=value` with the name as sent and the value encoded by Java's
//! `URLEncoder` (then `+` as `%20`), joined with `&`, the whole lowercased;
//! signed with HMAC-SHA1 under the secret key, in standard Base64.
//!
//! Real clients canonicalise slightly differently (`cs` leaves `~` literal,
//! libcloud also `[` and `]` and sorts lowercased names, legacy cloudmonkey
//! encodes spaces as `+`). [`verify`] accepts exactly those variants and no
//! others: each is one HMAC over the same secret, so none weakens it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::params::RawParams;

/// How a client encodes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Characters left literal beyond Java's `A-Z a-z 0-9 . - * _`.
    pub literal: &'static str,
    /// Spaces as `+` instead of `%20`.
    pub space_as_plus: bool,
    /// Names sorted lowercased instead of as sent.
    pub sort_lowercased: bool,
}

/// The server's own canonical form (cmk and cloudstack-go match it).
pub const JAVA: Encoding = Encoding {
    literal: "",
    space_as_plus: false,
    sort_lowercased: false,
};

/// Every form accepted: the server's and the known clients'.
pub const ACCEPTED: [Encoding; 4] = [
    JAVA,
    // cs 5.2: quote(v, safe="*")
    Encoding {
        literal: "~",
        space_as_plus: false,
        sort_lowercased: false,
    },
    // libcloud 3.9: quote(v, safe="[]*"), lowercased names sorted
    Encoding {
        literal: "~[]",
        space_as_plus: false,
        sort_lowercased: true,
    },
    // legacy cloudmonkey: quote_plus(v, safe="*"), lowercased names sorted
    Encoding {
        literal: "~",
        space_as_plus: true,
        sort_lowercased: true,
    },
];

fn encode(value: &str, e: Encoding) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || ".-*_".contains(c) || (b < 0x80 && e.literal.contains(c)) {
            out.push(c);
        } else if c == ' ' && e.space_as_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The lowercased canonical string of `params` (without `signature`) in encoding `e`.
pub fn canonical(params: &[(String, String)], e: Encoding) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if e.sort_lowercased {
        pairs.sort_by_key(|(k, _)| k.to_lowercase());
    } else {
        pairs.sort_by(|a, b| a.0.cmp(b.0));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v, e)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase()
}

fn hmac(secret: &str, message: &str) -> [u8; 20] {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The signature of `params` under `secret`, as the server computes it.
pub fn sign(params: &[(String, String)], secret: &str) -> String {
    STANDARD.encode(hmac(secret, &canonical(params, JAVA)))
}

/// A query string for `params`, signed under `secret` (for our own clients:
/// tests and the benchmark).
pub fn signed_query(params: &[(String, String)], secret: &str) -> String {
    let signature = sign(params, secret);
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    q.append_pair("signature", &signature);
    q.finish()
}

/// Whether the request's `signature` is the HMAC of its parameters under
/// `secret`, in one of the [`ACCEPTED`] canonical forms.
pub fn verify(params: &RawParams, secret: &str) -> bool {
    let Some(sent) = params.get("signature") else {
        return false;
    };
    // An unencoded `+` in a query string arrives as a space; base64 has no spaces.
    let Ok(sent) = STANDARD.decode(sent.replace(' ', "+")) else {
        return false;
    };
    let mut tried: Vec<String> = Vec::with_capacity(ACCEPTED.len());
    let mut ok = false;
    for e in ACCEPTED {
        let c = canonical(&params.0, e);
        if tried.contains(&c) {
            continue;
        }
        ok |= bool::from(hmac(secret, &c).as_slice().ct_eq(&sent));
        tried.push(c);
    }
    ok
}

/// The `signatureVersion=3` rules: `expires` required, parsed, not past; and
/// with `enforce.post.requests.and.timestamps`, v3 required and `expires`
/// at most 15 minutes ahead. Any failure is the 401 of a bad signature.
pub fn check_expiry(params: &RawParams, now: DateTime<Utc>, enforce: bool) -> Result<(), ApiError> {
    let v3 = params.get("signatureversion") == Some("3");
    if !v3 {
        return if enforce {
            Err(ApiError::unverified())
        } else {
            Ok(())
        };
    }
    let expires = params
        .get("expires")
        .and_then(crate::date::parse_expires)
        .ok_or_else(ApiError::unverified)?;
    if expires < now || (enforce && expires > now + Duration::minutes(15)) {
        return Err(ApiError::unverified());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        RawParams::parse(q, None).0
    }

    // The worked example of CloudStack's developer guide ("How to sign an API
    // call with Python"): its apikey, secret key and the signature it prints.
    const GUIDE_API_KEY: &str =
        "plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg";
    const GUIDE_SECRET: &str =
        "VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ";

    #[test]
    fn the_developer_guides_example_signature() {
        let p = pairs(&format!(
            "command=listUsers&response=json&apikey={GUIDE_API_KEY}"
        ));
        assert_eq!(
            canonical(&p, JAVA),
            format!(
                "apikey={}&command=listusers&response=json",
                GUIDE_API_KEY.to_lowercase()
            )
        );
        assert_eq!(sign(&p, GUIDE_SECRET), "TTpdDq/7j/J58XCRHomKoQXEQds=");
    }

    #[test]
    fn values_are_encoded_as_javas_urlencoder_does() {
        assert_eq!(
            encode("a b*c~d[e]:f/g+h_i.j-k", JAVA),
            "a%20b*c%7Ed%5Be%5D%3Af%2Fg%2Bh_i.j-k"
        );
        assert_eq!(encode("é", JAVA), "%C3%A9");
        assert_eq!(encode("a b~[", ACCEPTED[1]), "a%20b~%5B");
        assert_eq!(encode("a b~[", ACCEPTED[2]), "a%20b~[");
        assert_eq!(encode("a b~", ACCEPTED[3]), "a+b~");
    }

    #[test]
    fn names_stay_unencoded_and_the_signature_is_left_out() {
        let p = pairs("tags%5B0%5D.key=k&command=createTags&signature=xyz&Signature=abc");
        assert_eq!(canonical(&p, JAVA), "command=createtags&tags[0].key=k");
    }

    #[test]
    fn every_client_variant_verifies_and_a_wrong_secret_does_not() {
        let base = pairs("command=createUser&apiKey=K&password=p~w d[x]&response=json&zoneId=1");
        for e in ACCEPTED {
            let sig = STANDARD.encode(hmac("S", &canonical(&base, e)));
            let mut p = base.clone();
            p.push(("signature".into(), sig));
            let raw = RawParams(p);
            assert!(verify(&raw, "S"), "{e:?}");
            assert!(!verify(&raw, "T"), "{e:?}");
        }
    }

    #[test]
    fn a_signed_query_verifies_after_transport() {
        let p = pairs("command=listZones&apiKey=K&name=a b*~&response=json");
        let q = signed_query(&p, "secret");
        assert!(verify(&RawParams::parse(&q, None), "secret"));
        // A tampered value does not.
        let q = q.replace("listZones", "listHosts");
        assert!(!verify(&RawParams::parse(&q, None), "secret"));
    }

    #[test]
    fn a_plus_sent_unencoded_in_the_signature_still_verifies() {
        // Find a request whose signature holds a '+', then send it raw: it decodes as a space.
        let (p, sig) = (0..1000)
            .map(|i| {
                let p = pairs(&format!("command=listZones&apiKey=K&name=n{i}"));
                let sig = sign(&p, "s");
                (p, sig)
            })
            .find(|(_, sig)| sig.contains('+'))
            .expect("some signature holds a '+'");
        let q = format!("command=listZones&apiKey=K&name={}&signature={sig}", p[2].1);
        assert!(verify(&RawParams::parse(&q, None), "s"));
    }

    #[test]
    fn missing_or_garbage_signatures_fail() {
        assert!(!verify(&RawParams::parse("command=listZones", None), "s"));
        assert!(!verify(
            &RawParams::parse("command=listZones&signature=%%%", None),
            "s"
        ));
        assert!(!verify(
            &RawParams::parse("command=listZones&signature=", None),
            "s"
        ));
    }

    #[test]
    fn v3_expiry_rules() {
        let now = Utc::now();
        let at = |t: DateTime<Utc>| {
            RawParams::parse(
                &format!(
                    "signatureVersion=3&expires={}",
                    t.format("%Y-%m-%dT%H:%M:%S%z")
                ),
                None,
            )
        };
        assert!(check_expiry(&at(now + Duration::minutes(10)), now, false).is_ok());
        assert!(check_expiry(&at(now - Duration::seconds(5)), now, false).is_err());
        assert!(check_expiry(&at(now + Duration::minutes(30)), now, false).is_ok());
        assert!(check_expiry(&at(now + Duration::minutes(30)), now, true).is_err());
        // The name is matched case-insensitively (cloudmonkey sends `signatureversion`).
        let lower = RawParams::parse("signatureversion=3", None);
        assert!(
            check_expiry(&lower, now, false).is_err(),
            "v3 without expires"
        );
        let v2 = RawParams::parse("command=listZones", None);
        assert!(check_expiry(&v2, now, false).is_ok());
        assert!(check_expiry(&v2, now, true).is_err());
    }
}
