//! What the full read of a review would accept, without building it.
//!
//! The quick read ([`super::workload_update`]) keeps most of a pod template as it was
//! sent, but the full read parses all of it into k8s-openapi's types, and
//! refuses a body where a field has the wrong type (`"env": "x"`), a number
//! is out of range, a timestamp does not parse, a string holds a lone
//! surrogate or any JSON is nested past serde_json's limit. So that the
//! quick read never answers a body the full one refuses, each field it does
//! not build is still [`Check`]ed against its type's [`Shape`], with the
//! same `serde_json` calls the type itself makes (a string that has no
//! `\u` escape is checked by the quick read's reader, which takes exactly
//! the strings serde_json takes as a `String`).
//!
//! The shapes are traced from the k8s-openapi types themselves (their
//! `Deserialize` run once against [`Tracer`]), not written out by hand, so
//! they follow the types when k8s-openapi changes.

use std::borrow::Cow;
use std::fmt;

use super::json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use serde::de::value::{BorrowedStrDeserializer, Error as TraceError};
use serde::de::{self, DeserializeSeed, Deserializer, Expected, MapAccess, SeqAccess, Visitor};

/// A type as the JSON it accepts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    Bool,
    I32,
    I64,
    F64,
    Str,
    Time,
    MicroTime,
    /// A string or any number (k8s-openapi's `Quantity`).
    Quantity,
    /// A string or a 32-bit integer.
    IntOrString,
    /// Any JSON (`serde_json::Value`).
    Json,
    /// `null` or the inner shape.
    Option(Box<Shape>),
    List(Box<Shape>),
    /// An object of any string keys.
    Map(Box<Shape>),
    /// An object of these fields; others are ignored, as k8s-openapi does.
    Struct(Vec<(&'static str, Shape)>),
}

impl Shape {
    /// The traced shape of `T`.
    pub(super) fn of<T: de::DeserializeOwned>() -> Result<Shape, String> {
        let mut shape = None;
        T::deserialize(Tracer {
            slot: &mut shape,
            depth: 0,
        })
        .map_err(|e| format!("{}: {e}", std::any::type_name::<T>()))?;
        shape.ok_or_else(|| format!("{}: nothing traced", std::any::type_name::<T>()))
    }

    /// A struct's field, if it has one called `key`.
    pub(super) fn field(&self, key: &str) -> Option<&Shape> {
        match self {
            Shape::Struct(fields) => fields.iter().find(|(k, _)| *k == key).map(|(_, s)| s),
            _ => None,
        }
    }
}

/// serde_json refuses a value inside this many arrays and objects.
const JSON_DEPTH_LIMIT: usize = 128;

/// Reads one value of `shape` as its type would, keeping nothing. `depth`
/// is how many arrays and objects of the whole body hold the value: a
/// value read from its own text is refused where serde_json, reading the
/// body whole, would have run out of depth.
pub(super) struct Check<'s> {
    pub shape: &'s Shape,
    pub depth: usize,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        use serde::Deserialize;
        match self.shape {
            Shape::Bool => drop(bool::deserialize(d)?),
            Shape::I32 => drop(i32::deserialize(d)?),
            Shape::I64 => drop(i64::deserialize(d)?),
            Shape::F64 => drop(f64::deserialize(d)?),
            Shape::Str => AnyString.deserialize(d)?,
            Shape::Time => _ = Time::deserialize(d)?,
            Shape::MicroTime => _ = MicroTime::deserialize(d)?,
            Shape::Quantity => d.deserialize_any(QuantityText)?,
            Shape::IntOrString => d.deserialize_any(IntOrStringValue)?,
            Shape::Json => {
                let value = serde_json::Value::deserialize(d)?;
                if self.depth + nesting(&value) >= JSON_DEPTH_LIMIT {
                    return Err(de::Error::custom("recursion limit exceeded"));
                }
            }
            Shape::Option(inner) => d.deserialize_option(Nullable {
                inner,
                depth: self.depth,
            })?,
            Shape::List(_) => d.deserialize_seq(self.nested())?,
            Shape::Map(_) | Shape::Struct(_) => d.deserialize_map(self.nested())?,
        }
        Ok(())
    }
}

impl Check<'_> {
    fn nested(&self) -> Nested<'_> {
        Nested {
            shape: self.shape,
            depth: self.depth + 1,
        }
    }
}

/// How many arrays and objects deep a value goes (`1` for `[]`).
fn nesting(value: &serde_json::Value) -> usize {
    let inner = match value {
        serde_json::Value::Array(items) => items.iter().map(nesting).max(),
        serde_json::Value::Object(map) => map.values().map(nesting).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
}

/// A string, checked as a `String` would be, and dropped: undecoded where
/// the quick read's reader can vouch for it ([`json::CHECKED_STRING`]).
pub(super) struct AnyString;

impl<'de> DeserializeSeed<'de> for AnyString {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_newtype_struct(json::CHECKED_STRING, self)
    }
}

impl<'de> Visitor<'de> for AnyString {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    /// From the quick read's reader, which checked the string itself.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    /// From any other reader: the string read as a `String` is.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

/// Any JSON value, checked as a `serde_json::Value` would be read (its
/// numbers in range, its strings and keys decodable), and dropped: no map
/// or string is built. serde_json reads a `Value` through
/// `deserialize_any`, as this does, so both take the same texts.
pub(super) struct AnyValue;

impl<'de> DeserializeSeed<'de> for AnyValue {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(AnyValue)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A `Value`'s keys are `String`s.
        while map.next_key_seed(AnyString)?.is_some() {
            map.next_value_seed(AnyValue)?;
        }
        Ok(())
    }
}

/// A string, borrowed from the body where it has no escapes.
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// k8s-openapi's `Quantity`: a string or any number.
struct QuantityText;

impl Visitor<'_> for QuantityText {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Quantity")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// k8s-openapi's `IntOrString`: a 32-bit integer or a string.
struct IntOrStringValue;

impl Visitor<'_> for IntOrStringValue {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("IntOrString")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        i32::try_from(v)
            .map(drop)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"a 32-bit integer"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        i32::try_from(v)
            .map(drop)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a 32-bit integer"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

struct Nullable<'s> {
    inner: &'s Shape,
    depth: usize,
}

impl<'de> Visitor<'de> for Nullable<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        Check {
            shape: self.inner,
            depth: self.depth,
        }
        .deserialize(d)
    }
}

/// A list, map or struct, each item read by its shape.
struct Nested<'s> {
    shape: &'s Shape,
    /// The depth of the items.
    depth: usize,
}

impl<'de> Visitor<'de> for Nested<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.shape {
            Shape::List(_) => f.write_str("a sequence"),
            _ => f.write_str("a map"),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Shape::List(item) = self.shape else {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        };
        while seq
            .next_element_seed(Check {
                shape: item,
                depth: self.depth,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeyText)? {
            let shape = match self.shape {
                Shape::Map(value) => value,
                Shape::Struct(_) => match self.shape.field(&key) {
                    Some(field) => field,
                    // Unknown to the type: k8s-openapi skips it unread.
                    None => {
                        map.next_value::<de::IgnoredAny>()?;
                        continue;
                    }
                },
                _ => return Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
            };
            map.next_value_seed(Check {
                shape,
                depth: self.depth,
            })?;
        }
        Ok(())
    }
}

/// A key, borrowed from the body where it has no escapes.
pub(super) struct KeyText;

impl<'de> DeserializeSeed<'de> for KeyText {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(Text)
    }
}

/// A `Deserializer` that feeds a type one of each field, item and variant
/// it asks for, and writes down what it asked for. Anything it does not
/// know (another kind of number, another newtype) fails the trace rather
/// than being taken for something looser.
struct Tracer<'s> {
    slot: &'s mut Option<Shape>,
    depth: usize,
}

/// k8s-openapi's types nest about ten deep; a recursive type would not end.
const MAX_TRACE_DEPTH: usize = 32;

impl Tracer<'_> {
    fn expect(what: &dyn Expected, wanted: &str) -> Result<(), TraceError> {
        let asked = what.to_string();
        if asked == wanted {
            Ok(())
        } else {
            Err(de::Error::custom(format!(
                "asked for {asked}, traced only as {wanted}"
            )))
        }
    }

    /// The depth of what this value holds.
    fn inner_depth(&self) -> Result<usize, TraceError> {
        if self.depth >= MAX_TRACE_DEPTH {
            return Err(de::Error::custom("nested too deep: a recursive type?"));
        }
        Ok(self.depth + 1)
    }
}

macro_rules! leaf {
    ($($method:ident => $shape:ident, $expected:literal, $visit:ident($value:expr);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            Tracer::expect(&visitor, $expected)?;
            *self.slot = Some(Shape::$shape);
            visitor.$visit($value)
        }
    )*};
}

macro_rules! untraced {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
            Err(de::Error::custom(concat!("untraced: ", stringify!($method))))
        }
    )*};
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaf! {
        deserialize_bool => Bool, "a boolean", visit_bool(false);
        deserialize_i32 => I32, "i32", visit_i32(0);
        deserialize_i64 => I64, "i64", visit_i64(0);
        deserialize_f64 => F64, "f64", visit_f64(0.0);
        deserialize_str => Str, "a string", visit_str("");
        deserialize_string => Str, "a string", visit_str("");
    }

    untraced! {
        deserialize_i8, deserialize_i16, deserialize_u8, deserialize_u16, deserialize_u32,
        deserialize_u64, deserialize_f32, deserialize_char, deserialize_bytes,
        deserialize_byte_buf, deserialize_unit, deserialize_identifier,
        deserialize_ignored_any
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let shape = match (&visitor as &dyn Expected).to_string().as_str() {
            "IntOrString" => Shape::IntOrString,
            "Quantity" => Shape::Quantity,
            "any valid JSON value" => Shape::Json,
            other => return Err(de::Error::custom(format!("untraced any: {other}"))),
        };
        *self.slot = Some(shape);
        visitor.visit_str("0")
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut inner = None;
        let value = visitor.visit_some(Tracer {
            slot: &mut inner,
            depth: self.inner_depth()?,
        })?;
        *self.slot = Some(Shape::Option(Box::new(traced(inner)?)));
        Ok(value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let shape = match name {
            "Time" => Shape::Time,
            "MicroTime" => Shape::MicroTime,
            // Transparent, as serde_json reads it.
            _ => return visitor.visit_newtype_struct(self),
        };
        *self.slot = Some(shape);
        visitor.visit_newtype_struct(BorrowedStrDeserializer::new("1970-01-01T00:00:00Z"))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut item = None;
        let depth = self.inner_depth()?;
        let value = visitor.visit_seq(OneItem {
            slot: Some(&mut item),
            depth,
        })?;
        *self.slot = Some(Shape::List(Box::new(traced(item)?)));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut value_shape = None;
        let depth = self.inner_depth()?;
        let value = visitor.visit_map(OneEntry {
            slot: Some(&mut value_shape),
            depth,
        })?;
        *self.slot = Some(Shape::Map(Box::new(traced(value_shape)?)));
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let depth = self.inner_depth()?;
        let mut shapes = vec![None; fields.len()];
        let value = visitor.visit_map(EachField {
            fields,
            shapes: &mut shapes,
            next: 0,
            depth,
        })?;
        let traced = fields
            .iter()
            .zip(shapes)
            .map(|(name, shape)| Ok((*name, traced(shape)?)))
            .collect::<Result<_, TraceError>>()?;
        *self.slot = Some(Shape::Struct(traced));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(de::Error::custom("untraced: a unit struct"))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, TraceError> {
        Err(de::Error::custom("untraced: a tuple"))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(de::Error::custom("untraced: a tuple struct"))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(de::Error::custom("untraced: an enum"))
    }
}

fn traced(shape: Option<Shape>) -> Result<Shape, TraceError> {
    shape.ok_or_else(|| de::Error::custom("a value was never asked for"))
}

/// A list of one item.
struct OneItem<'s> {
    slot: Option<&'s mut Option<Shape>>,
    depth: usize,
}

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = TraceError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        match self.slot.take() {
            Some(slot) => seed
                .deserialize(Tracer {
                    slot,
                    depth: self.depth,
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

/// A map of one entry, its key a string.
struct OneEntry<'s> {
    slot: Option<&'s mut Option<Shape>>,
    depth: usize,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.slot.is_none() {
            return Ok(None);
        }
        let mut key = None;
        let value = seed.deserialize(Tracer {
            slot: &mut key,
            depth: self.depth,
        })?;
        if key != Some(Shape::Str) {
            return Err(de::Error::custom("a map whose keys are not strings"));
        }
        Ok(Some(value))
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let slot = self
            .slot
            .take()
            .ok_or_else(|| de::Error::custom("a value before its key"))?;
        seed.deserialize(Tracer {
            slot,
            depth: self.depth,
        })
    }
}

/// A struct's fields, each once.
struct EachField<'s> {
    fields: &'static [&'static str],
    shapes: &'s mut [Option<Shape>],
    next: usize,
    depth: usize,
}

impl<'de> MapAccess<'de> for EachField<'_> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        match self.fields.get(self.next) {
            Some(name) => seed
                .deserialize(BorrowedStrDeserializer::new(name))
                .map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let slot = self
            .shapes
            .get_mut(self.next)
            .ok_or_else(|| de::Error::custom("a value before its key"))?;
        self.next += 1;
        seed.deserialize(Tracer {
            slot,
            depth: self.depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn at<'s>(shape: &'s Shape, path: &[&str]) -> &'s Shape {
        path.iter().fold(shape, |s, key| match s {
            Shape::Option(inner) | Shape::List(inner) | Shape::Map(inner) if *key == "*" => inner,
            Shape::Option(inner) => match &**inner {
                Shape::Struct(_) => inner.field(key).unwrap_or_else(|| panic!("{key}")),
                other => panic!("{key} in {other:?}"),
            },
            _ => s.field(key).unwrap_or_else(|| panic!("{key}")),
        })
    }

    #[test]
    fn the_pod_template_types_trace_to_what_their_json_may_be() {
        let pod = Shape::of::<PodSpec>().unwrap();
        let opt = |s: Shape| Shape::Option(Box::new(s));
        assert_eq!(
            at(&pod, &["terminationGracePeriodSeconds"]),
            &opt(Shape::I64)
        );
        assert_eq!(at(&pod, &["hostNetwork"]), &opt(Shape::Bool));
        let container = at(&pod, &["containers", "*", "*"]);
        assert_eq!(container, &Shape::of::<Container>().unwrap());
        assert_eq!(at(container, &["name"]), &opt(Shape::Str));
        assert_eq!(at(container, &["env", "*", "*", "value"]), &opt(Shape::Str));
        assert_eq!(
            at(container, &["resources", "limits", "*"]),
            &Shape::Map(Box::new(Shape::Quantity))
        );
        assert_eq!(
            at(container, &["ports", "*", "*", "containerPort"]),
            &opt(Shape::I32)
        );
        assert_eq!(
            at(container, &["readinessProbe", "tcpSocket", "port"]),
            &opt(Shape::IntOrString)
        );
        let meta = Shape::of::<ObjectMeta>().unwrap();
        assert_eq!(at(&meta, &["creationTimestamp"]), &opt(Shape::Time));
        assert_eq!(
            at(&meta, &["managedFields", "*", "*", "fieldsV1"]),
            &opt(Shape::Json)
        );
        assert!(Shape::of::<PodTemplateSpec>().is_ok());
        assert!(Shape::of::<Volume>().is_ok());
    }

    #[test]
    fn what_the_tracer_does_not_know_fails_the_trace() {
        // A u16 and a tuple: no k8s-openapi field is either.
        assert!(Shape::of::<u16>().unwrap_err().contains("deserialize_u16"));
        assert!(Shape::of::<(i32, i32)>().unwrap_err().contains("tuple"));
    }

    fn check(shape: &Shape, json: &str, depth: usize) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        Check { shape, depth }.deserialize(&mut de)?;
        de.end()
    }

    #[test]
    fn a_value_is_checked_as_its_type_would_read_it() {
        let container = Shape::of::<Container>().unwrap();
        // What a Container refuses, the check refuses.
        for bad in [
            r#"{"env": "x"}"#,
            r#"{"stdin": 1}"#,
            r#"{"ports": [{"containerPort": 4294967296}]}"#,
            r#"{"ports": [{"containerPort": 2.0}]}"#,
            r#"{"env": [null]}"#,
            r#"{"env": [{"value": "\ud800"}]}"#,
            r#"{"resources": {"limits": {"cpu": true}}}"#,
            r#"{"readinessProbe": {"tcpSocket": {"port": 1.5}}}"#,
            r#"{"readinessProbe": {"tcpSocket": {"port": 2147483648}}}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Container>(bad).is_err(), "{bad}");
            assert!(check(&container, bad, 0).is_err(), "{bad}");
        }
        // What it reads, the check passes; unknown fields are skipped.
        for good in [
            r#"{"resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}"#,
            r#"{"name": "a\u0062", "colour": [1, {"x": "\ud800"}]}"#,
            r#"{"readinessProbe": {"tcpSocket": {"port": "http"}}, "env": null}"#,
            r#"{"ports": [{"containerPort": 80}], "stdin": true}"#,
        ] {
            assert!(serde_json::from_str::<Container>(good).is_ok(), "{good}");
            check(&container, good, 0).unwrap();
        }
    }

    #[test]
    fn any_json_is_refused_where_the_whole_body_would_run_out_of_depth() {
        let meta = Shape::of::<ObjectMeta>().unwrap();
        let fields = |n: usize| {
            format!(
                r#"{{"managedFields": [{{"fieldsV1": {}{}}}]}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        // The object's own text at depth 0: metadata, the list, the entry
        // and 125 arrays make serde_json's 128.
        assert!(serde_json::from_str::<ObjectMeta>(&fields(124)).is_ok());
        assert!(serde_json::from_str::<ObjectMeta>(&fields(125)).is_err());
        check(&meta, &fields(124), 0).unwrap();
        assert!(check(&meta, &fields(125), 0).is_err());
        // The same text four levels down in a body has four levels less.
        check(&meta, &fields(120), 4).unwrap();
        let err = check(&meta, &fields(121), 4).unwrap_err().to_string();
        assert!(err.contains("recursion limit"), "{err}");
    }
}
