//! Serde deserialization from a positioned YAML tree, with errors that know where they are.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::{
    path::{FieldPath, Seg},
    yaml::{Mark, Node, Value},
};

/// A document whose shape does not fit the expected type (unknown field, wrong type, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// What serde reported, e.g. `unknown field `nmber``.
    pub message: String,
    /// Where the offending node starts.
    pub mark: Option<Mark>,
    /// Path from the deserialized root, innermost segment last.
    pub path: FieldPath,
}

impl ShapeError {
    fn at(mut self, mark: Mark) -> Self {
        if self.mark.is_none() {
            self.mark = Some(mark);
        }
        self
    }

    fn under(mut self, seg: Seg) -> Self {
        self.path.push_front(seg);
        self
    }
}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ShapeError {
            message: msg.to_string(),
            mark: None,
            path: FieldPath::default(),
        }
    }
}

/// Deserializes `T` from `node`.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, ShapeError> {
    T::deserialize(NodeDe(node))
}

/// A deserializer reading one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

impl<'a> NodeDe<'a> {
    fn invalid(&self, exp: &dyn de::Expected) -> ShapeError {
        let unexp = match &self.0.value {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => de::Unexpected::Signed(v),
                Err(_) => de::Unexpected::Other("a very large integer"),
            },
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Str(s) => de::Unexpected::Str(s),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        };
        <ShapeError as de::Error>::invalid_type(unexp, exp).at(self.0.mark)
    }
}

/// The IPv6 address that a flow sequence's `2001:db8::` becomes, where YAML reads a mapping.
// By YAML's rules, `[1.2.3.4, 2001:db8::]` holds a one-entry mapping `{"2001:db8:": null}`;
// Kubernetes reads the address, and so does this reader.
fn ipv6_in_flow(node: &Node) -> Option<String> {
    match &node.value {
        Value::Map(entries) if entries.len() == 1 => {
            match (&entries[0].0.value, &entries[0].1.value) {
                (Value::Str(k), Value::Null)
                    if k.ends_with(':') && k.parse::<std::net::Ipv6Addr>().is_err() =>
                {
                    let text = format!("{k}:");
                    text.parse::<std::net::Ipv6Addr>().ok().map(|_| text)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

struct SeqAcc<'a> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> SeqAccess<'de> for SeqAcc<'de> {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((i, node)) => seed
                .deserialize(NodeDe(node))
                .map(Some)
                .map_err(|e| e.at(node.mark).under(Seg::Index(i))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapAcc<'a> {
    iter: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    key: Option<&'a Node>,
}

fn key_seg(key: &Node) -> Seg {
    match &key.value {
        Value::Str(s) => Seg::Key(s.clone()),
        Value::Int(i) => Seg::Key(i.to_string()),
        Value::Bool(b) => Seg::Key(b.to_string()),
        _ => Seg::Key("?".to_owned()),
    }
}

impl<'de> MapAccess<'de> for MapAcc<'de> {
    type Error = ShapeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ShapeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.value = Some(v);
                self.key = Some(k);
                seed.deserialize(KeyDe(k))
                    .map(Some)
                    .map_err(|e| e.at(k.mark).under(key_seg(k)))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ShapeError> {
        match (self.value.take(), self.key.take()) {
            (Some(v), Some(k)) => seed
                .deserialize(NodeDe(v))
                .map_err(|e| e.at(v.mark).under(key_seg(k))),
            _ => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Map keys: scalars are offered as strings, so that `'7777': 80` and `7777: 80` both name a port.
struct KeyDe<'a>(&'a Node);

impl<'de> Deserializer<'de> for KeyDe<'de> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match &self.0.value {
            Value::Str(s) => visitor.visit_str(s),
            Value::Int(i) => visitor.visit_string(i.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            Value::Null => visitor.visit_str(""),
            _ => NodeDe(self.0).deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let node = self.0;
        let r = match &node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => {
                if let Ok(v) = u64::try_from(*i) {
                    visitor.visit_u64(v)
                } else if let Ok(v) = i64::try_from(*i) {
                    visitor.visit_i64(v)
                } else {
                    visitor.visit_i128(*i)
                }
            }
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAcc {
                iter: items.iter().enumerate(),
            }),
            Value::Map(entries) => visitor.visit_map(MapAcc {
                iter: entries.iter(),
                value: None,
                key: None,
            }),
        };
        r.map_err(|e| e.at(node.mark))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if let Some(text) = ipv6_in_flow(self.0) {
            return visitor
                .visit_string(text)
                .map_err(|e: ShapeError| e.at(self.0.mark));
        }
        match &self.0.value {
            Value::Str(s) => visitor
                .visit_str(s)
                .map_err(|e: ShapeError| e.at(self.0.mark)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match &self.0.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match &self.0.value {
            Value::Map(_) => self.deserialize_any(visitor),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match &self.0.value {
            Value::Str(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: ShapeError| e.at(self.0.mark)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct tuple tuple_struct
    }
}
