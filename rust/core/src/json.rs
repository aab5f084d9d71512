//! Strict JSON for token segments and key sets.
//!
//! `serde_json` keeps the last of two equal keys when it builds a `Value` or a map, so two
//! parsers can read one document differently (RFC 8725bis §2, serde#2897). Everything here goes
//! through [`StrictSeed`], a seed that builds the same `serde_json::Value` but refuses a repeated
//! key at any depth, and refuses nesting deeper than [`MAX_DEPTH`]. Error details are fixed
//! strings plus a position; they never quote the input.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::TokenError;

#[cfg(test)]
mod tests;

/// Parses `bytes` as one JSON object, refusing duplicate keys at any depth, nesting deeper than
/// [`MAX_DEPTH`], and trailing data. `segment` names the part for the error.
pub(crate) fn parse_object(
    bytes: &[u8],
    segment: &'static str,
) -> Result<Map<String, Value>, TokenError> {
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
        Value::Object(map) => Ok(map),
        _ => Err(bad("not a JSON object".into())),
    }
}

/// Parses `bytes` as [`parse_object`] does (the same refusals, the same errors) but keeps only
/// the top-level members named in `names`, in that order, without building a map: for a small
/// document read for a few members on every request (a token's header). Keys are compared where
/// they lie in the input; other members' values are still parsed strictly, then dropped.
pub(crate) fn parse_members<const N: usize>(
    bytes: &[u8],
    segment: &'static str,
    names: [&'static str; N],
) -> Result<[Option<Value>; N], TokenError> {
    let bad = |detail: String| TokenError::BadJson { segment, detail };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("not a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let members = Deserializer::deserialize_map(&mut de, MembersVisitor { names })
        .map_err(|e| bad(e.to_string()))?;
    de.end().map_err(|e| bad(e.to_string()))?;
    Ok(members)
}

/// Visits a top-level object for [`parse_members`].
struct MembersVisitor<const N: usize> {
    names: [&'static str; N],
}

impl<'de, const N: usize> Visitor<'de> for MembersVisitor<N> {
    type Value = [Option<Value>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let child = StrictSeed { depth: 1 }.enter()?;
        let mut kept: [Option<Value>; N] = std::array::from_fn(|_| None);
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let value = access.next_value_seed(child)?;
            if let Some(i) = self.names.iter().position(|n| *n == key) {
                kept[i] = Some(value);
            }
            keys.push(key);
        }
        // Repeated keys anywhere in the object, found by sorting rather than by a map.
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(de::Error::custom("duplicate key"));
        }
        Ok(kept)
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
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite float; refuse one anyway rather than invent a value.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(child)?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(map))
    }
}
