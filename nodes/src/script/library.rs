//! Functions weir adds to Rhai for mappings: time, ids, JSON, encodings,
//! hashes and dates.
//!
//! | function | returns |
//! |---|---|
//! | `now()` | the current UTC time, RFC 3339 with milliseconds |
//! | `now_unix()`, `now_ms()` | the current Unix time in seconds, milliseconds |
//! | `uuid()` | a random UUID (v4) |
//! | `parse_json(text)`, `to_json(value)` | JSON text to a value and back |
//! | `base64_encode(text)`, `base64_decode(text)` | standard Base64 (and `base64url_…`, unpadded) |
//! | `sha256(text)`, `hmac_sha256(key, text)` | lower-case hex digests |
//! | `parse_date(text)` | Unix seconds from RFC 3339 (or RFC 2822) text |
//! | `parse_date(text, format)` | Unix seconds from text in a strftime `format` (UTC unless it has `%z`) |
//! | `format_date(time, format)` | `time` (Unix seconds or RFC 3339 text) in a strftime `format`, UTC |
//! | `format_date(time, format, zone)` | the same in an IANA time zone |
//! | `to_rfc3339(seconds)` | RFC 3339 text of Unix seconds |

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rhai::{Dynamic, Engine, EvalAltResult, INT, ImmutableString, Position};
use sha2::{Digest, Sha256};

use super::convert;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(message: String) -> Fallible<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        Position::NONE,
    )))
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("now", || {
            Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
        })
        .register_fn("now_unix", || Utc::now().timestamp())
        .register_fn("now_ms", || Utc::now().timestamp_millis())
        .register_fn("uuid", || uuid::Uuid::new_v4().to_string())
        .register_fn("parse_json", parse_json)
        .register_fn("to_json", to_json)
        .register_fn("base64_encode", |s: &str| STANDARD.encode(s))
        .register_fn("base64_decode", |s: &str| decode_base64(&STANDARD, s))
        .register_fn("base64url_encode", |s: &str| URL_SAFE_NO_PAD.encode(s))
        .register_fn("base64url_decode", |s: &str| {
            decode_base64(&URL_SAFE_NO_PAD, s.trim_end_matches('='))
        })
        .register_fn("sha256", |s: &str| {
            hex::encode(Sha256::digest(s.as_bytes()))
        })
        .register_fn("hmac_sha256", hmac_sha256)
        .register_fn("parse_date", |s: &str| parse_date(s))
        .register_fn("parse_date", parse_date_with)
        .register_fn("format_date", |t: INT, f: &str| {
            format_date(time_of_int(t)?, f, None)
        })
        .register_fn("format_date", |t: &str, f: &str| {
            format_date(time_of_str(t)?, f, None)
        })
        .register_fn("format_date", |t: INT, f: &str, z: &str| {
            format_date(time_of_int(t)?, f, Some(z))
        })
        .register_fn("format_date", |t: &str, f: &str, z: &str| {
            format_date(time_of_str(t)?, f, Some(z))
        })
        .register_fn("to_rfc3339", |t: INT| {
            time_of_int(t).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        });
}

fn parse_json(text: &str) -> Fallible<Dynamic> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(convert::to_dynamic(&value)),
        Err(e) => fail(format!("parse_json: {e}")),
    }
}

fn to_json(value: Dynamic) -> Fallible<String> {
    match convert::to_json(&value) {
        Ok(json) => Ok(json.to_string()),
        Err(e) => fail(format!("to_json: {e}")),
    }
}

fn decode_base64(engine: &impl base64::Engine, text: &str) -> Fallible<String> {
    let bytes = match engine.decode(text) {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("base64_decode: {e}")),
    };
    String::from_utf8(bytes)
        .or_else(|_| fail("base64_decode: the decoded bytes are not UTF-8 text".into()))
}

fn hmac_sha256(key: &str, text: &str) -> Fallible<String> {
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(text.as_bytes());
            Ok(hex::encode(mac.finalize().into_bytes()))
        }
        Err(e) => fail(format!("hmac_sha256: {e}")),
    }
}

fn parse_date(text: &str) -> Fallible<INT> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(text) {
        return Ok(t.timestamp());
    }
    fail(format!(
        "parse_date: `{text}` is not an RFC 3339 or RFC 2822 date; pass a format as the second argument"
    ))
}

fn parse_date_with(text: &str, format: &str) -> Fallible<INT> {
    if let Ok(t) = DateTime::parse_from_str(text, format) {
        return Ok(t.timestamp());
    }
    match NaiveDateTime::parse_from_str(text, format) {
        Ok(t) => Ok(t.and_utc().timestamp()),
        Err(_) => match chrono::NaiveDate::parse_from_str(text, format) {
            Ok(d) => Ok(d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp()),
            Err(e) => fail(format!(
                "parse_date: `{text}` does not match `{format}`: {e}"
            )),
        },
    }
}

fn time_of_int(seconds: INT) -> Fallible<DateTime<Utc>> {
    match Utc.timestamp_opt(seconds, 0).single() {
        Some(t) => Ok(t),
        None => fail(format!("{seconds} is out of the range of dates")),
    }
}

fn time_of_str(text: &str) -> Fallible<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Ok(t.with_timezone(&Utc)),
        Err(e) => fail(format!("`{text}` is not an RFC 3339 date: {e}")),
    }
}

fn format_date(time: DateTime<Utc>, format: &str, zone: Option<&str>) -> Fallible<ImmutableString> {
    use std::fmt::Write;
    let mut out = String::new();
    let written = match zone {
        None => write!(out, "{}", time.format(format)),
        Some(zone) => match zone.parse::<chrono_tz::Tz>() {
            Ok(tz) => write!(out, "{}", time.with_timezone(&tz).format(format)),
            Err(_) => return fail(format!("format_date: `{zone}` is not an IANA time zone")),
        },
    };
    match written {
        Ok(()) => Ok(out.into()),
        Err(_) => fail(format!("format_date: `{format}` is not a valid format")),
    }
}

#[cfg(test)]
mod tests {
    use crate::script::engine;
    use rhai::Dynamic;

    fn eval(script: &str) -> Result<Dynamic, String> {
        engine::engine()
            .eval::<Dynamic>(script)
            .map_err(|e| e.to_string())
    }

    fn eval_str(script: &str) -> String {
        eval(script).unwrap().into_string().unwrap()
    }

    #[test]
    fn hashes_match_published_vectors() {
        assert_eq!(
            eval_str(r#"sha256("abc")"#),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            eval_str(r#"hmac_sha256("Jefe", "what do ya want for nothing?")"#),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64_round_trips_and_reports_bad_input() {
        assert_eq!(eval_str(r#"base64_encode("hello")"#), "aGVsbG8=");
        assert_eq!(eval_str(r#"base64_decode("aGVsbG8=")"#), "hello");
        assert_eq!(
            eval_str(r#"base64url_decode(base64url_encode("a?b>"))"#),
            "a?b>"
        );
        assert!(
            eval(r#"base64_decode("%%%")"#)
                .unwrap_err()
                .contains("base64_decode")
        );
    }

    #[test]
    fn json_round_trips() {
        assert_eq!(
            eval_str(r#"to_json(parse_json("{\"a\":[1,2.5,null]}"))"#),
            r#"{"a":[1,2.5,null]}"#
        );
        assert!(
            eval(r#"parse_json("{")"#)
                .unwrap_err()
                .contains("parse_json")
        );
    }

    #[test]
    fn dates_parse_and_format() {
        assert_eq!(
            eval(r#"parse_date("2024-03-01T12:00:00Z")"#)
                .unwrap()
                .as_int(),
            Ok(1_709_294_400)
        );
        assert_eq!(
            eval(r#"parse_date("01/03/2024 12:00", "%d/%m/%Y %H:%M")"#)
                .unwrap()
                .as_int(),
            Ok(1_709_294_400)
        );
        assert_eq!(
            eval(r#"parse_date("2024-03-01", "%Y-%m-%d")"#)
                .unwrap()
                .as_int(),
            Ok(1_709_251_200)
        );
        assert_eq!(
            eval_str(r#"format_date(1709294400, "%Y-%m-%d %H:%M")"#),
            "2024-03-01 12:00"
        );
        assert_eq!(
            eval_str(r#"format_date("2024-03-01T12:00:00Z", "%H:%M", "Europe/Berlin")"#),
            "13:00"
        );
        assert_eq!(eval_str("to_rfc3339(0)"), "1970-01-01T00:00:00Z");
        assert!(
            eval(r#"parse_date("yesterday")"#)
                .unwrap_err()
                .contains("not an RFC 3339")
        );
        assert!(
            eval(r#"format_date(0, "%H", "Mars/Olympus")"#)
                .unwrap_err()
                .contains("IANA")
        );
    }

    #[test]
    fn now_and_uuid_have_their_shapes() {
        let now = eval_str("now()");
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
        assert_eq!(eval_str("uuid()").len(), 36);
        assert!(eval("now_ms()").unwrap().as_int().unwrap() > 1_600_000_000_000);
    }
}
