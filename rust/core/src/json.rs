//! Strict JSON for token segments and key sets.
//!
//! `serde_json` keeps the last of two equal keys when it builds a `Value` or a map, so two
//! parsers can read one document differently (RFC 8725bis §2, serde#2897). Every document read
//! here goes through [`StrictSeed`], which refuses a repeated key at any depth (found once its
//! object has been read, so the error's position is the object's end) and nesting deeper than
//! [`MAX_DEPTH`]. Error details are fixed strings plus a position; they never quote the input.
//!
//! A document is read into [`Json`], whose strings borrow from the input unless they had escapes:
//! a token's claims are read on every cache miss, and owned strings and a B-tree cost about half
//! of a miss's allocations. The conversions from and to `serde_json` values are for callers that
//! hold one already (tests, the fuzz targets); they are not a way in for untrusted bytes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::TokenError;

#[cfg(test)]
mod tests;

/// A JSON value, borrowing its strings from the document it was read from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A finite number.
    Number(Number),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Self>),
    /// An object without repeated keys.
    Object(JsonObject<'a>),
}

/// A JSON object: each key once, members ordered by key length and then bytes, so lookups can
/// bisect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonObject<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Json<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&JsonObject<'a>> {
        match self {
            Self::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value`.
    pub fn into_serde(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(b),
            Self::Number(n) => Value::Number(n),
            Self::String(s) => Value::String(s.into_owned()),
            Self::Array(items) => Value::Array(items.into_iter().map(Self::into_serde).collect()),
            Self::Object(o) => Value::Object(o.into_serde()),
        }
    }
}

impl<'a> JsonObject<'a> {
    /// The value of member `key`.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        let i = self.position(key).ok()?;
        Some(&self.members[i].1)
    }

    /// Takes member `key` out.
    pub fn remove(&mut self, key: &str) -> Option<Json<'a>> {
        let i = self.position(key).ok()?;
        Some(self.members.remove(i).1)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The keys, shortest first (then by bytes).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| &**k)
    }

    /// The same object as a `serde_json` map.
    pub fn into_serde(self) -> Map<String, Value> {
        self.members
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_serde()))
            .collect()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|(k, _)| key_order(k, key))
    }
}

/// The order of an object's members: by length, then by bytes. Claim names mostly differ in
/// length, so a lookup compares integers and reads bytes only for a same-length key.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl<'a> From<&'a Value> for Json<'a> {
    /// Borrows a `serde_json` value (for callers holding one, e.g. tests built with `json!`).
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::String(Cow::Borrowed(s)),
            Value::Array(items) => Self::Array(items.iter().map(Self::from).collect()),
            Value::Object(map) => Self::Object(JsonObject::from(map)),
        }
    }
}

impl<'a> From<&'a Map<String, Value>> for JsonObject<'a> {
    /// Borrows a `serde_json` map (its keys are unique already).
    fn from(map: &'a Map<String, Value>) -> Self {
        let mut members: Vec<_> = map
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
            .collect();
        members.sort_unstable_by(|a, b| key_order(&a.0, &b.0));
        Self { members }
    }
}

/// Parses `bytes` as one JSON object, refusing duplicate keys at any depth, nesting deeper than
/// [`MAX_DEPTH`], and trailing data. `segment` names the part for the error.
pub(crate) fn parse_object<'a>(
    bytes: &'a [u8],
    segment: &'static str,
) -> Result<JsonObject<'a>, TokenError> {
    let bad = |detail: String| TokenError::BadJson { segment, detail };
    // Checked up front so a scalar or array is never parsed (and serde never reports its value).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("not a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed { depth: 1 }
        .deserialize(&mut de)
        .map_err(|e| bad(e.to_string()))?;
    de.end().map_err(|e| bad(e.to_string()))?;
    match value {
        Json::Object(object) => Ok(object),
        _ => Err(bad("not a JSON object".into())),
    }
}

/// An object key, borrowed from the input unless it had to be unescaped.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Deepest nesting accepted.
pub(crate) const MAX_DEPTH: usize = 32;

/// Deserializes one JSON value at nesting level `depth` (the top-level value is level 1).
#[derive(Clone, Copy)]
struct StrictSeed {
    depth: usize,
}

impl StrictSeed {
    /// Enters the array or object being visited: refuses it when it sits deeper than
    /// [`MAX_DEPTH`], else returns the seed for its members.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        // serde_json never yields a non-finite float; refuse one anyway rather than invent a value.
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let child = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json<'de>, A::Error> {
        let child = self.enter()?;
        // A token's claims are one object of some ten members: room for them up front, rather
        // than growing 4, 8, 16. Nested objects are usually small.
        let mut members = Vec::with_capacity(if self.depth == 1 { 16 } else { 0 });
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let value = access.next_value_seed(child)?;
            members.push((key, value));
        }
        // Sorted once, then a repeated key sits next to its twin (and lookups can bisect).
        members.sort_unstable_by(|a: &(Cow<'de, str>, _), b| key_order(&a.0, &b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(de::Error::custom("duplicate key"));
        }
        Ok(Json::Object(JsonObject { members }))
    }
}
