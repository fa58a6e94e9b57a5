//! The quick read's JSON reader: a serde `Deserializer` over a review's
//! text that walks objects and arrays itself and finds where each value
//! ends with [`value_end`], a validating scan about twice as fast as
//! serde_json's skip. A value no type reads (managedFields, the spec of a
//! workload no policy selects) or one kept as its text ([`Text`]) costs
//! that scan alone; a string without escapes is lent as it is; a string
//! only checked ([`CHECKED_STRING`]) is taken undecoded unless it has a
//! `\u` escape; any other value is handed, as its text, to serde_json.
//! A review's old object is mostly the new one's text: the second of two
//! [`TWIN`]s compares each of its texts with the first's at the same
//! place and depth, and scans only about where they differ; each string
//! it only checks, with the first's of the same count; and each of its
//! [`Item`]s (a template's containers and volumes), with the first's of
//! the same count, taken unread where they are the same bytes.
//!
//! It takes no text serde_json refuses: [`value_end`] accepts exactly the
//! JSON serde_json accepts where it skips a value, and refuses more than
//! 127 nested arrays and objects, the most a typed read by serde_json can
//! take (its recursion limit), so that no value handed to serde_json on
//! its own is deeper than it would be in the whole. Anything it refuses
//! goes the full way, like any other failure of the quick read.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Error;
use serde_json::de::StrRead;

/// The most arrays and objects one inside another that this reader takes.
pub(super) const MAX_NESTING: usize = 127;

/// `T` read from `text`, one JSON value and whitespace.
pub(super) fn from_str<'de, T: serde::Deserialize<'de>>(text: &'de str) -> Result<T, Error> {
    from_str_seed(text, std::marker::PhantomData)
}

/// What `seed` reads from `text`, one JSON value and whitespace.
pub(super) fn from_str_seed<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    seed: S,
) -> Result<S::Value, Error> {
    let mut reader = Reader::new(text);
    let value = seed.deserialize(&mut reader)?;
    reader.end()?;
    Ok(value)
}

/// A value's text, borrowed from the body: what serde_json's `RawValue`
/// is, without scanning the value a second time under this reader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Text<'a>(&'a str);

/// The name this reader knows a [`Text`] by.
const TEXT: &str = "upgrade_guard::Text";

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Lent;
        impl<'de> Visitor<'de> for Lent {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            // From this reader.
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(text))
            }
            // From serde_json, which calls a newtype's own reader.
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Text<'de>, D::Error> {
                <&serde_json::value::RawValue as serde::Deserialize>::deserialize(d)
                    .map(|raw| Text(raw.get()))
            }
        }
        d.deserialize_newtype_struct(TEXT, Lent)
    }
}

impl<'a> Text<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }
}

/// The name this reader knows a string by that is only checked, as
/// serde_json checks a `String`, and dropped ([`super::schema::AnyString`]):
/// it is taken undecoded where it has no `\u` escape, and the visitor
/// told so by `visit_unit`.
pub(super) const CHECKED_STRING: &str = "upgrade_guard::CheckedString";

/// The name this reader knows a value by that has a twin in the same
/// text (a review's new and old object): the [`Text`]s of the first one
/// read are remembered, in order, and each of the second's is compared
/// with its counterpart and scanned only where they differ; so are its
/// strings only checked ([`CHECKED_STRING`]).
pub(super) const TWIN: &str = "upgrade_guard::Twin";

/// A value of a [`TWIN`] read as an [`Item`]: the second twin takes it,
/// unread, as the first's item of the same count where it is the same
/// bytes at the same depth.
const TWIN_ITEM: &str = "upgrade_guard::TwinItem";

/// A value of a [`TWIN`] that the second twin may take as the first's
/// (a container of a pod template: most are the other object's bytes).
#[derive(Debug, PartialEq)]
pub(super) enum Item<T> {
    /// Read; in the first twin, with its count among the first's items.
    Read(T, Option<usize>),
    /// The same bytes, at the same depth, as the first twin's item of
    /// this count, which was read as a `T` would read these.
    Same(usize),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for ItemVisitor<T> {
            type Value = Item<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            // From any other reader.
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Item<T>, D::Error> {
                T::deserialize(d).map(|value| Item::Read(value, None))
            }
            // From this reader: the first twin's count, then the value.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<T>, A::Error> {
                let count: u64 = seq.next_element()?.ok_or_else(refused_item)?;
                let value = seq.next_element()?.ok_or_else(refused_item)?;
                Ok(Item::Read(value, usize::try_from(count).ok()))
            }
            // From this reader only: no other reads an `Item`, and one
            // that hands a newtype to `deserialize_any` would make a
            // number of one.
            fn visit_u64<E: de::Error>(self, count: u64) -> Result<Item<T>, E> {
                usize::try_from(count)
                    .map(Item::Same)
                    .map_err(|_| E::custom("an item count past usize"))
            }
        }
        d.deserialize_newtype_struct(TWIN_ITEM, ItemVisitor(std::marker::PhantomData))
    }
}

fn refused_item<E: de::Error>() -> E {
    E::custom("a twin item without its count or value")
}

/// Reads one value at a time from a text, as serde_json's `Deserializer`
/// does.
struct Reader<'de> {
    text: &'de str,
    at: usize,
    /// The arrays and objects open around `at`.
    depth: usize,
    twins: Twins,
}

/// The [`Text`]s of a value's first twin, and how far the second twin has
/// come through them.
#[derive(Default)]
struct Twins {
    texts: Vec<FirstText>,
    /// Places in the first twin's arrays and objects, a few for each text
    /// ([`MARK_EVERY`]), in order.
    marks: Vec<Place>,
    /// The first twin's strings only checked ([`CHECKED_STRING`]), in
    /// order, and how many of them the second twin has come through.
    strings: Vec<FirstString>,
    strings_read: usize,
    /// The first twin's [`Item`]s, in order, and how many of them the
    /// second twin has come through.
    items: Vec<FirstItem>,
    items_read: usize,
    read: TwinsRead,
    /// How many of the second's texts were taken without a scan, how many
    /// were compared in part, and how many of its bytes were compared
    /// instead of scanned; and how many of its checked strings were taken
    /// without a scan.
    #[cfg(test)]
    taken: usize,
    #[cfg(test)]
    strings_taken: usize,
    #[cfg(test)]
    items_taken: usize,
    #[cfg(test)]
    partly: usize,
    #[cfg(test)]
    unscanned: usize,
}

/// A [`Text`] of a first twin: where it starts and ends, how deep it is,
/// and its places in [`Twins::marks`].
struct FirstText {
    start: usize,
    end: usize,
    depth: usize,
    marks: std::ops::Range<usize>,
}

/// A string of a first twin only checked: where it starts and ends, and
/// whether it has a `\u` escape (then it was decoded by serde_json).
struct FirstString {
    start: usize,
    end: usize,
    unicode: bool,
}

/// An [`Item`] of a first twin: where it starts and ends, how deep it
/// is, and how many texts, checked strings and items the first twin had
/// read when it ended (where the second goes on after taking it).
#[derive(Default)]
struct FirstItem {
    start: usize,
    end: usize,
    depth: usize,
    texts: usize,
    strings: usize,
    items: usize,
}

/// The fewest bytes between two marked places of a first twin's text: a
/// second twin's scan starts again at most about this far before where it
/// differs.
const MARK_EVERY: usize = 96;

/// How many bytes a place of the second twin must share with a marked
/// place of the first one for the two to be tried as the same place.
const ANCHOR: usize = 16;

/// How many marks past a difference the second twin may align with
/// again: bytes taken out of it up to about this many [`MARK_EVERY`]s.
const ANCHORS: usize = 4;

#[derive(Default, Clone, Copy, PartialEq)]
enum TwinsRead {
    #[default]
    Neither,
    First,
    Between,
    /// In the second twin, at its nth text.
    Second(usize),
    Both,
}

fn refused() -> Error {
    de::Error::custom("JSON this reader does not take")
}

impl<'de> Reader<'de> {
    fn new(text: &'de str) -> Self {
        Reader {
            text,
            at: 0,
            depth: 0,
            twins: Twins::default(),
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(refused()),
        }
    }

    /// The next byte after whitespace, not taken.
    fn peek(&mut self) -> Option<u8> {
        self.at = whitespace_end(self.text.as_bytes(), self.at);
        self.text.as_bytes().get(self.at).copied()
    }

    /// Takes `byte`, the next after whitespace.
    fn take(&mut self, byte: u8) -> Result<(), Error> {
        if self.peek() != Some(byte) {
            return Err(refused());
        }
        self.at += 1;
        Ok(())
    }

    /// The next value's text, checked and taken.
    fn value(&mut self) -> Result<&'de str, Error> {
        self.peek();
        let start = self.at;
        let end = value_end(self.text.as_bytes(), start, self.depth).ok_or_else(refused)?;
        self.at = end;
        self.text.get(start..end).ok_or_else(refused)
    }

    /// The next value's text, as [`Reader::value`]; in a second twin,
    /// scanned only where it differs from its counterpart.
    fn text_value(&mut self) -> Result<&'de str, Error> {
        self.peek();
        let (start, depth) = (self.at, self.depth);
        let text = self.text.as_bytes();
        let end = match self.twins.read {
            TwinsRead::First => {
                let marks = &mut self.twins.marks;
                if marks.capacity() == 0 {
                    // The first twin is about half the text.
                    marks.reserve(text.len() / MARK_EVERY / 2);
                }
                let first = marks.len();
                let end = marked_end(text, start, depth, marks).ok_or_else(refused)?;
                self.twins.texts.push(FirstText {
                    start,
                    end,
                    depth,
                    marks: first..marks.len(),
                });
                end
            }
            TwinsRead::Second(n) => {
                self.twins.read = TwinsRead::Second(n + 1);
                self.second_end(n).ok_or_else(refused)?
            }
            _ => value_end(text, start, depth).ok_or_else(refused)?,
        };
        self.at = end;
        self.text.get(start..end).ok_or_else(refused)
    }

    /// Where the second twin's nth text, at `at`, ends, as [`value_end`]
    /// finds it: where it is the same bytes as its counterpart, the first
    /// twin's nth text, at the same depth, those bytes are compared
    /// instead of scanned.
    fn second_end(&mut self, n: usize) -> Option<usize> {
        let text = self.text.as_bytes();
        let (at, depth) = (self.at, self.depth);
        let Some(first) = self.twins.texts.get(n).filter(|t| t.depth == depth) else {
            return value_end(text, at, depth);
        };
        let length = first.end - first.start;
        let whole = text.get(first.start..first.end) == text.get(at..at + length);
        let (end, _compared) = match text.get(first.start) {
            // An array's, an object's or a string's end is found within it:
            // the same bytes end alike.
            Some(b'{' | b'[' | b'"') if whole => (at + length, length),
            Some(b'{' | b'[') => {
                let marks = self.twins.marks.get(first.marks.clone());
                resynced_end(text, first, marks.unwrap_or_default(), at)?
            }
            // A number's end is found by the byte after it.
            _ => return value_end(text, at, depth),
        };
        #[cfg(test)]
        {
            self.twins.taken += usize::from(_compared == length);
            self.twins.partly += usize::from((1..length).contains(&_compared));
            self.twins.unscanned += _compared;
        }
        Some(end)
    }

    /// The next value read by serde_json from its text; taken only if
    /// read, so that a type whose reader goes on past a failed read
    /// fails next on the value, never past it.
    fn by_serde_json<V>(
        &mut self,
        read: impl FnOnce(&mut serde_json::Deserializer<StrRead<'de>>) -> Result<V, Error>,
    ) -> Result<V, Error> {
        self.peek();
        let start = self.at;
        let value = whole_by_serde_json(self.value()?, read);
        if value.is_err() {
            self.at = start;
        }
        value
    }

    /// A string without escapes, lent; `None` for another value, left
    /// untaken.
    fn plain_string(&mut self) -> Result<Option<&'de str>, Error> {
        if self.peek() != Some(b'"') {
            return Ok(None);
        }
        let (end, escapes) = string_end(self.text.as_bytes(), self.at + 1).ok_or_else(refused)?;
        if escapes != Escapes::None {
            return Ok(None);
        }
        let content = self.text.get(self.at + 1..end - 1).ok_or_else(refused)?;
        self.at = end;
        Ok(Some(content))
    }

    /// Takes a string serde_json would take as a `String`, undecoded;
    /// `false` for another value or a string with a `\u` escape (serde_json
    /// pairs its surrogates), left untaken.
    fn checked_string(&mut self) -> Result<bool, Error> {
        if self.peek() != Some(b'"') {
            return Ok(false);
        }
        let start = self.at;
        let (end, unicode) = match self.twin_string(start) {
            Some(found) => found,
            None => {
                let (end, escapes) =
                    string_end(self.text.as_bytes(), start + 1).ok_or_else(refused)?;
                (end, escapes == Escapes::Unicode)
            }
        };
        if self.twins.read == TwinsRead::First {
            self.twins.strings.push(FirstString {
                start,
                end,
                unicode,
            });
        }
        if unicode {
            return Ok(false);
        }
        self.at = end;
        Ok(true)
    }

    /// In a second twin, where the checked string at `start` ends and
    /// whether it has a `\u` escape, if it is the same bytes as the first
    /// twin's checked string of the same count (a string's end is found
    /// within it: the same bytes end alike); `None` to scan it.
    fn twin_string(&mut self, start: usize) -> Option<(usize, bool)> {
        let TwinsRead::Second(_) = self.twins.read else {
            return None;
        };
        let n = self.twins.strings_read;
        self.twins.strings_read += 1;
        let first = self.twins.strings.get(n)?;
        let text = self.text.as_bytes();
        let length = first.end - first.start;
        if text.get(first.start..first.end) != text.get(start..start + length) {
            return None;
        }
        #[cfg(test)]
        {
            self.twins.strings_taken += 1;
        }
        Some((start + length, first.unicode))
    }

    /// An [`Item`]: in a first twin, read and counted; in a second,
    /// taken unread where it is the same bytes, at the same depth, as the
    /// first's item of the same count; else read.
    fn item<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.peek();
        let (start, depth) = (self.at, self.depth);
        match self.twins.read {
            TwinsRead::First => {
                let count = self.twins.items.len();
                // Its place is held: an item inside it is counted after it.
                self.twins.items.push(FirstItem::default());
                let value = visitor.visit_seq(Counted {
                    reader: self,
                    next: CountedNext::Count(count),
                })?;
                let item = FirstItem {
                    start,
                    end: self.at,
                    depth,
                    texts: self.twins.texts.len(),
                    strings: self.twins.strings.len(),
                    items: self.twins.items.len(),
                };
                if let Some(held) = self.twins.items.get_mut(count) {
                    *held = item;
                }
                Ok(value)
            }
            TwinsRead::Second(_) => {
                let count = self.twins.items_read;
                self.twins.items_read += 1;
                let Some(first) = self.twins.items.get(count) else {
                    return visitor.visit_newtype_struct(self);
                };
                let text = self.text.as_bytes();
                let length = first.end - first.start;
                // An array's, an object's or a string's end is found within
                // it: the same bytes, as deep, are read alike and end alike.
                let same = first.depth == depth
                    && length > 0
                    && matches!(text.get(first.start), Some(b'{' | b'[' | b'"'))
                    && text.get(first.start..first.end) == text.get(start..start + length);
                if !same {
                    return visitor.visit_newtype_struct(self);
                }
                self.at = start + length;
                // Its texts, strings and items are the first's: the next
                // are compared with the ones after those.
                self.twins.read = TwinsRead::Second(first.texts);
                self.twins.strings_read = first.strings;
                self.twins.items_read = first.items;
                #[cfg(test)]
                {
                    self.twins.items_taken += 1;
                }
                visitor.visit_u64(u64::try_from(count).map_err(|_| refused())?)
            }
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn open(&mut self, byte: u8) -> Result<(), Error> {
        self.take(byte)?;
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(refused());
        }
        Ok(())
    }

    fn close(&mut self, byte: u8) -> Result<(), Error> {
        self.take(byte)?;
        self.depth -= 1;
        Ok(())
    }

    fn map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.open(b'{')?;
        let value = visitor.visit_map(Items {
            reader: self,
            first: true,
        })?;
        self.close(b'}')?;
        Ok(value)
    }

    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.open(b'[')?;
        let value = visitor.visit_seq(Items {
            reader: self,
            first: true,
        })?;
        self.close(b']')?;
        Ok(value)
    }
}

/// The members of an object or the items of an array, one at a time.
struct Items<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'de> Items<'_, 'de> {
    /// Whether another member or item follows before `close`.
    fn another(&mut self, close: u8) -> Result<bool, Error> {
        let next = self.reader.peek();
        if next == Some(close) {
            return Ok(false);
        }
        if !std::mem::replace(&mut self.first, false) {
            self.reader.take(b',')?;
            // A trailing comma, refused here as serde_json does, whatever
            // the item's type makes of what follows.
            if self.reader.peek() == Some(close) {
                return Err(refused());
            }
        }
        Ok(true)
    }
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.another(b'}')? {
            return Ok(None);
        }
        let reader = &mut *self.reader;
        if reader.peek() != Some(b'"') {
            return Err(refused());
        }
        let start = reader.at;
        let (end, escapes) = string_end(reader.text.as_bytes(), start + 1).ok_or_else(refused)?;
        let escaped = escapes != Escapes::None;
        reader.at = end;
        reader.take(b':')?;
        let quoted = reader.text.get(start..end).ok_or_else(refused)?;
        seed.deserialize(Key { quoted, escaped }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.reader)
    }
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.another(b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

/// A first twin's [`Item`] as its reader takes it: its count, then its
/// value, then nothing.
struct Counted<'r, 'de> {
    reader: &'r mut Reader<'de>,
    next: CountedNext,
}

enum CountedNext {
    Count(usize),
    Value,
    Done,
}

impl<'de> SeqAccess<'de> for Counted<'_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        use serde::de::IntoDeserializer;
        match std::mem::replace(&mut self.next, CountedNext::Done) {
            CountedNext::Count(count) => {
                self.next = CountedNext::Value;
                let count = u64::try_from(count).map_err(|_| refused())?;
                seed.deserialize(count.into_deserializer()).map(Some)
            }
            CountedNext::Value => seed.deserialize(&mut *self.reader).map(Some),
            CountedNext::Done => Ok(None),
        }
    }
}

/// Hands each named method to serde_json, with the text of the value (or
/// key) next: `self.by_serde_json`.
macro_rules! by_serde_json {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            self.by_serde_json(|de| de.$method($($arg,)* visitor))
        }
    )*};
}

/// The methods both [`Reader`] and [`Key`] hand to serde_json.
macro_rules! scalars_by_serde_json {
    () => {
        by_serde_json!(
            deserialize_bool(),
            deserialize_i8(),
            deserialize_i16(),
            deserialize_i32(),
            deserialize_i64(),
            deserialize_i128(),
            deserialize_u8(),
            deserialize_u16(),
            deserialize_u32(),
            deserialize_u64(),
            deserialize_u128(),
            deserialize_f32(),
            deserialize_f64(),
            deserialize_char(),
            deserialize_bytes(),
            deserialize_byte_buf(),
            deserialize_unit(),
            deserialize_tuple(len: usize),
            deserialize_tuple_struct(name: &'static str, len: usize),
            deserialize_unit_struct(name: &'static str),
            deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        );
    };
}

impl<'de> Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            Some(b'{') => self.map(visitor),
            Some(b'[') => self.seq(visitor),
            _ => match self.plain_string()? {
                Some(text) => visitor.visit_borrowed_str(text),
                None => self.by_serde_json(|de| de.deserialize_any(visitor)),
            },
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.plain_string()? {
            Some(text) => visitor.visit_borrowed_str(text),
            None => self.by_serde_json(|de| de.deserialize_str(visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek() == Some(b'n') {
            self.at = word_end(self.text.as_bytes(), self.at, b"null").ok_or_else(refused)?;
            return visitor.visit_none();
        }
        visitor.visit_some(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            Some(b'{') => self.map(visitor),
            _ => self.by_serde_json(|de| de.deserialize_map(visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek() {
            Some(b'{') => self.map(visitor),
            _ => self.by_serde_json(|de| de.deserialize_struct(name, fields, visitor)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            Some(b'[') => self.seq(visitor),
            _ => self.by_serde_json(|de| de.deserialize_seq(visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == TEXT {
            return visitor.visit_borrowed_str(self.text_value()?);
        }
        if name == TWIN {
            let (during, after) = match self.twins.read {
                TwinsRead::Neither => (TwinsRead::First, TwinsRead::Between),
                TwinsRead::Between => (TwinsRead::Second(0), TwinsRead::Both),
                // A third, or one inside a twin: read as it is.
                _ => return visitor.visit_newtype_struct(self),
            };
            self.twins.read = during;
            let value = visitor.visit_newtype_struct(&mut *self);
            self.twins.read = after;
            return value;
        }
        if name == TWIN_ITEM {
            return self.item(visitor);
        }
        if name == CHECKED_STRING && self.checked_string()? {
            return visitor.visit_unit();
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Checked as a text is: managedFields, ignored, is most of the
        // text of a review's two objects.
        self.text_value()?;
        visitor.visit_unit()
    }

    scalars_by_serde_json!();
}

/// An object's key: its text with the quotes, lent where it has no
/// escapes, else decoded by serde_json.
struct Key<'de> {
    quoted: &'de str,
    escaped: bool,
}

impl<'de> Key<'de> {
    fn by_serde_json<V>(
        self,
        read: impl FnOnce(&mut serde_json::Deserializer<StrRead<'de>>) -> Result<V, Error>,
    ) -> Result<V, Error> {
        whole_by_serde_json(self.quoted, read)
    }
}

/// `read` by serde_json from `text`, which it must read whole.
fn whole_by_serde_json<'de, V>(
    text: &'de str,
    read: impl FnOnce(&mut serde_json::Deserializer<StrRead<'de>>) -> Result<V, Error>,
) -> Result<V, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = read(&mut de)?;
    de.end()?;
    Ok(value)
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.escaped {
            return self.by_serde_json(|de| de.deserialize_str(visitor));
        }
        let content = self
            .quoted
            .get(1..self.quoted.len() - 1)
            .ok_or_else(refused)?;
        visitor.visit_borrowed_str(content)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    // serde_json reads a key it ignores as a string, escapes checked.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    scalars_by_serde_json!();
    by_serde_json!(
        deserialize_option(),
        deserialize_map(),
        deserialize_seq(),
        deserialize_newtype_struct(name: &'static str),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
    );
}

fn whitespace_end(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = text.get(at) {
        at += 1;
    }
    at
}

/// Where the value that starts at `at`, after whitespace, ends, inside
/// `depth` open arrays and objects; `None` where serde_json would fail
/// skipping it, or where it nests deeper than [`MAX_NESTING`] in all.
/// (Its string and key scans are inlined into it: 9% of its time on the
/// 18.9 kB ungoverned review.)
pub(super) fn value_end(text: &[u8], at: usize, depth: usize) -> Option<usize> {
    match scan(text, Place::start(at), depth, |_| false)? {
        Scanned::End(end) => Some(end),
        Scanned::Stopped(_) => None,
    }
}

/// Where [`scan`] is about to read a value: its offset, and the arrays
/// and objects open around it in the value scanned (one bit a level in
/// `objects`, set for an object). From a place, the scan reads only the
/// bytes from `at` on; it came to it having read none after `at`'s (after
/// a `[`, it looked at that one for a `]`).
#[derive(Clone, Copy)]
struct Place {
    at: usize,
    open: usize,
    objects: u128,
}

impl Place {
    fn start(at: usize) -> Place {
        Place {
            at,
            open: 0,
            objects: 0,
        }
    }

    fn nested_alike(&self, other: &Place) -> bool {
        (self.open, self.objects) == (other.open, other.objects)
    }
}

enum Scanned {
    End(usize),
    Stopped(Place),
}

/// [`value_end`]'s scan from `from`, stopped at the first place `stop`
/// asks it to.
#[inline(always)]
fn scan(
    text: &[u8],
    from: Place,
    depth: usize,
    mut stop: impl FnMut(&Place) -> bool,
) -> Option<Scanned> {
    let Place {
        mut at,
        mut open,
        mut objects,
    } = from;
    loop {
        let place = Place { at, open, objects };
        if stop(&place) {
            return Some(Scanned::Stopped(place));
        }
        // Most values are strings.
        match next_byte(text, &mut at, b'"')? {
            b'"' => at = string_end(text, at + 1)?.0,
            bracket @ (b'{' | b'[') => {
                open += 1;
                if depth + open > MAX_NESTING {
                    return None;
                }
                objects = objects << 1 | u128::from(bracket == b'{');
                at = whitespace_end(text, at + 1);
                // `}` and `]` are two after `{` and `[`.
                if text.get(at) == Some(&(bracket + 2)) {
                    at += 1;
                    open -= 1;
                    objects >>= 1;
                } else {
                    if bracket == b'{' {
                        at = key_end(text, at)?;
                    }
                    continue;
                }
            }
            b't' => at = word_end(text, at, b"true")?,
            b'f' => at = word_end(text, at, b"false")?,
            b'n' => at = word_end(text, at, b"null")?,
            b'-' | b'0'..=b'9' => at = number_end(text, at)?,
            _ => return None,
        }
        // After a value: a comma and the next, or the close of its array
        // or object.
        loop {
            if open == 0 {
                return Some(Scanned::End(at));
            }
            let in_object = objects & 1 == 1;
            match next_byte(text, &mut at, b',')? {
                b',' => {
                    at += 1;
                    if in_object {
                        at = key_end(text, at)?;
                    }
                    break;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                _ => return None,
            }
            at += 1;
            open -= 1;
            objects >>= 1;
        }
    }
}

/// [`value_end`] of a first twin's text, marking a place of its arrays
/// and objects in `marks` at least [`MARK_EVERY`] bytes after the last.
fn marked_end(text: &[u8], at: usize, depth: usize, marks: &mut Vec<Place>) -> Option<usize> {
    if !matches!(text.get(at), Some(b'{' | b'[')) {
        return value_end(text, at, depth);
    }
    let mut next = at;
    let mark = |place: &Place| {
        if place.at >= next {
            marks.push(*place);
            next = place.at + MARK_EVERY;
        }
        false
    };
    match scan(text, Place::start(at), depth, mark)? {
        Scanned::End(end) => Some(end),
        Scanned::Stopped(_) => None,
    }
}

/// Where the second twin's array or object at `at` ends, as [`value_end`]
/// finds it, and how many of its bytes were compared with `first`'s
/// instead of scanned; `marks` are `first`'s.
///
/// From two places nested alike, one in each, the scan reads the same
/// bytes the same way, so it ends alike if all the bytes ahead are the
/// same: the second's end is where the first's is. Where they differ,
/// the second is scanned from the last place marked before, which the
/// same bytes ahead of it led to, up to a place nested like one of the
/// first [`ANCHORS`] places marked from where they differ, with the same
/// [`ANCHOR`] bytes ahead: from there the two are compared again. Each
/// byte of the first is compared once; the second is scanned no more than
/// [`value_end`] would scan it, but for about [`MARK_EVERY`] bytes again
/// at each difference.
fn resynced_end(
    text: &[u8],
    first: &FirstText,
    marks: &[Place],
    at: usize,
) -> Option<(usize, usize)> {
    let depth = first.depth;
    let mut compared = 0;
    // A place of the second's, and the place of the first's it is nested
    // like, with the same bytes before it.
    let (mut place, mut theirs) = (Place::start(at), first.start);
    loop {
        let ahead = text.get(theirs..first.end).unwrap_or_default();
        let same = common_len(ahead, text.get(place.at..).unwrap_or_default());
        if same == ahead.len() {
            return Some((place.at + same, compared + same));
        }
        let differs = theirs + same;
        // The second twin is read after the first: its bytes come later.
        let Some(shift) = place.at.checked_sub(theirs) else {
            return value_end(text, at, depth).map(|end| (end, 0));
        };
        // A mark's own byte may have been looked at to come to it.
        let next = marks.partition_point(|m| m.at < differs);
        let before = next.checked_sub(1).and_then(|i| marks.get(i));
        if let Some(mark) = before.filter(|m| m.at >= theirs) {
            compared += mark.at - theirs;
            place = Place {
                at: mark.at + shift,
                ..*mark
            };
        }
        // Marks of the first past the difference, any of which the second
        // may come to next: after bytes changed, or added, the first;
        // after some taken out, a later one.
        let anchors = marks.get(next..marks.len().min(next + ANCHORS));
        let anchors = anchors.unwrap_or_default();
        let ahead_of = |a: &Place| {
            text.get(a.at..first.end.min(a.at + ANCHOR))
                .unwrap_or_default()
        };
        let mut anchored = first.end;
        let realigned = |p: &Place| {
            if p.at < differs + shift {
                return false;
            }
            let found = anchors.iter().find(|a| {
                let needle = ahead_of(a);
                p.nested_alike(a) && text.get(p.at..p.at + needle.len()) == Some(needle)
            });
            found.inspect(|a| anchored = a.at).is_some()
        };
        match scan(text, place, depth, realigned)? {
            Scanned::End(end) => return Some((end, compared)),
            Scanned::Stopped(p) => (place, theirs) = (p, anchored),
        }
    }
}

/// How many bytes `a` and `b` share from their start.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    let (wide_a, _) = a.as_chunks::<32>();
    let (wide_b, _) = b.as_chunks::<32>();
    let whole = 32
        * wide_a
            .iter()
            .zip(wide_b)
            .take_while(|(x, y)| x == y)
            .count();
    let rest = a.get(whole..).unwrap_or_default().iter();
    whole
        + rest
            .zip(b.get(whole..).unwrap_or_default())
            .take_while(|(x, y)| x == y)
            .count()
}

/// After whitespace, a key and its colon.
#[inline(always)]
fn key_end(text: &[u8], at: usize) -> Option<usize> {
    let at = byte_at(text, at, b'"')?;
    let at = byte_at(text, string_end(text, at + 1)?.0, b':')?;
    Some(at + 1)
}

/// Where `byte` is, at `at` after whitespace, if it is there.
#[inline(always)]
fn byte_at(text: &[u8], mut at: usize, byte: u8) -> Option<usize> {
    (next_byte(text, &mut at, byte)? == byte).then_some(at)
}

/// The byte at `at` after whitespace, `at` moved to it. Compact JSON, as
/// the API server writes it, has no whitespace: the `likely` byte is told
/// first, before whitespace is looked for.
#[inline(always)]
fn next_byte(text: &[u8], at: &mut usize, likely: u8) -> Option<u8> {
    if text.get(*at) == Some(&likely) {
        return Some(likely);
    }
    *at = whitespace_end(text, *at);
    text.get(*at).copied()
}

fn word_end(text: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (text.get(at..at + word.len())? == word).then_some(at + word.len())
}

fn digits_end(text: &[u8], mut at: usize) -> usize {
    while let Some(b'0'..=b'9') = text.get(at) {
        at += 1;
    }
    at
}

/// A number as serde_json skips one: one leading zero at most, a digit
/// after a `.` and after an exponent.
fn number_end(text: &[u8], mut at: usize) -> Option<usize> {
    if text.get(at) == Some(&b'-') {
        at += 1;
    }
    match *text.get(at)? {
        b'0' => {
            at += 1;
            if let Some(b'0'..=b'9') = text.get(at) {
                return None;
            }
        }
        b'1'..=b'9' => at = digits_end(text, at + 1),
        _ => return None,
    }
    if text.get(at) == Some(&b'.') {
        let end = digits_end(text, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = text.get(at) {
            at += 1;
        }
        let end = digits_end(text, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// From after a string's opening quote: where it ends, after its closing
/// quote, and what escapes it has. serde_json refuses a control character
/// in a string and an unknown escape; a `\u` needs four hex digits.
#[inline(always)]
fn string_end(text: &[u8], mut at: usize) -> Option<(usize, Escapes)> {
    let mut escapes = Escapes::None;
    // Each 16 bytes' stops found at once and taken in turn: an escaped
    // string (a last-applied annotation) has one every few bytes.
    while let Some(chunk) = text.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        let mut found = stops(chunk);
        loop {
            if found == 0 {
                at += 16;
                break;
            }
            let i = found.trailing_zeros() as usize;
            // `found` has 16 bits: the mask only spares a bounds check.
            match chunk[i & 15] {
                b'"' => return Some((at + i + 1, escapes)),
                b'\\' => {
                    let (end, kind) = escape_end(text, at + i)?;
                    escapes = escapes.max(kind);
                    // The escape's own bytes are not stops.
                    let taken = end - at;
                    if taken >= 16 {
                        at = end;
                        break;
                    }
                    found &= u32::MAX << taken;
                }
                _ => return None,
            }
        }
    }
    // Fewer than 16 bytes left: one at a time.
    loop {
        while text.get(at).is_some_and(|&b| !is_stop(b)) {
            at += 1;
        }
        match *text.get(at)? {
            b'"' => return Some((at + 1, escapes)),
            b'\\' => {
                let (end, kind) = escape_end(text, at)?;
                escapes = escapes.max(kind);
                at = end;
            }
            _ => return None,
        }
    }
}

/// Where the escape whose backslash is at `at` ends, and its kind.
#[inline(always)]
fn escape_end(text: &[u8], at: usize) -> Option<(usize, Escapes)> {
    match *text.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some((at + 2, Escapes::Simple)),
        b'u' if text.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => {
            Some((at + 6, Escapes::Unicode))
        }
        _ => None,
    }
}

/// What escapes a string has, as far as reading it goes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Escapes {
    None,
    /// Only one-character escapes (`\n`, `\"`): each stands for one
    /// character, so serde_json takes the string as a `String`.
    Simple,
    /// A `\u` too: a `String` takes it only if its surrogates pair up.
    Unicode,
}

#[cfg(target_arch = "x86_64")]
use sse2::stops;
#[cfg(not(target_arch = "x86_64"))]
use stops_one_by_one as stops;

/// Whether a string's scan stops at `b`: a quote, a backslash or a
/// control character.
fn is_stop(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// A bit for each of the 16 bytes that [`is_stop`], told one byte at a time.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn stops_one_by_one(chunk: &[u8; 16]) -> u32 {
    (0..16).fold(0, |found, i| found | u32::from(is_stop(chunk[i])) << i)
}

/// Whether more than `cap` bytes of `text` are `{`, `[`, `,` or `:`,
/// inside strings too: a bound on how many JSON values it holds. Found 16
/// bytes at a time, and only as far as needed: no further once the rest
/// of the text, every byte a separator, could not take the count over
/// `cap`.
pub(super) fn separators_over(text: &[u8], cap: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    let (count, at) = sse2::separators(text, cap);
    #[cfg(not(target_arch = "x86_64"))]
    let (count, at) = (0, 0);
    let rest = text.get(at..).unwrap_or_default();
    if count > cap || count + rest.len() <= cap {
        return count > cap;
    }
    count
        + rest
            .iter()
            .filter(|b| matches!(b, b'{' | b'[' | b',' | b':'))
            .count()
        > cap
}

/// `body` as text, if it is UTF-8. What the API server sends is ASCII,
/// told 64 bytes at a time in half the instructions of the standard
/// check (which still checks anything else).
pub(super) fn utf8(body: &[u8]) -> Option<&str> {
    #[cfg(target_arch = "x86_64")]
    if sse2::ascii(body) {
        // SAFETY: ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(body) });
    }
    std::str::from_utf8(body).ok()
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_loadu_si128, _mm_max_epu8,
        _mm_movemask_epi8, _mm_or_si128, _mm_sad_epu8, _mm_set1_epi8, _mm_setzero_si128,
        _mm_sub_epi8, _mm_unpackhi_epi64,
    };

    /// A bit for each of the 16 bytes that is a quote, a backslash or a
    /// control character.
    pub(super) fn stops(chunk: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is part of every x86_64 target, and the load reads
        // the chunk's 16 bytes, unaligned.
        unsafe { stops_sse2(chunk.as_ptr().cast()) }
    }

    #[target_feature(enable = "sse2")]
    unsafe fn stops_sse2(chunk: *const __m128i) -> u32 {
        // SAFETY: the caller's 16 bytes.
        let v = unsafe { _mm_loadu_si128(chunk) };
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `v <= 0x1f`: the larger of the two is 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }

    /// How many of the bytes of `text`'s whole 16-byte chunks are `{`,
    /// `[`, `,` or `:`, and how many bytes those chunks hold; it stops
    /// early, after a whole KiB, once the count is over `cap`, or once the
    /// count and the bytes left are at most `cap`.
    pub(super) fn separators(text: &[u8], cap: usize) -> (usize, usize) {
        // SAFETY: as in `stops`; each load reads one whole chunk.
        unsafe { separators_sse2(text, cap) }
    }

    #[target_feature(enable = "sse2")]
    unsafe fn separators_sse2(text: &[u8], cap: usize) -> (usize, usize) {
        let mut chunks = text.chunks_exact(16);
        let (mut count, mut at) = (0, 0);
        loop {
            // Each byte lane counts its hits, up to 64 chunks at a time (a
            // lane holds 255), then the lanes are summed: a popcount of
            // each chunk's mask cost more than its compares (the x86_64
            // baseline has no popcnt instruction).
            let mut lanes = _mm_setzero_si128();
            let mut taken = 0;
            for chunk in chunks.by_ref().take(64) {
                // SAFETY: the chunk's 16 bytes.
                let v = unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) };
                let brace = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'{' as i8));
                let bracket = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'[' as i8));
                let comma = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
                let colon = _mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8));
                let hits = _mm_or_si128(_mm_or_si128(brace, bracket), _mm_or_si128(comma, colon));
                // A hit is -1.
                lanes = _mm_sub_epi8(lanes, hits);
                taken += 1;
            }
            if taken == 0 {
                return (count, at);
            }
            // The lanes summed in two halves of 8.
            let sums = _mm_sad_epu8(lanes, _mm_setzero_si128());
            let low = _mm_cvtsi128_si64(sums);
            let high = _mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
            count += (low + high) as usize;
            at += 16 * taken;
            if count > cap || count + (text.len() - at) <= cap {
                return (count, at);
            }
        }
    }

    /// Whether every byte of `text` is ASCII.
    pub(super) fn ascii(text: &[u8]) -> bool {
        // SAFETY: as in `stops`; each load reads one whole chunk.
        unsafe { ascii_sse2(text) }
    }

    #[target_feature(enable = "sse2")]
    unsafe fn ascii_sse2(text: &[u8]) -> bool {
        let (blocks, rest) = text.as_chunks::<64>();
        for block in blocks {
            let (chunks, _) = block.as_chunks::<16>();
            let mut any = _mm_setzero_si128();
            for chunk in chunks {
                // SAFETY: the chunk's 16 bytes.
                any = _mm_or_si128(any, unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) });
            }
            // A byte's top bit set: not ASCII.
            if _mm_movemask_epi8(any) != 0 {
                return false;
            }
        }
        rest.is_ascii()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    /// A StatefulSet as the API server sends one, cut short: escapes,
    /// numbers, nulls, empty objects and arrays, managedFields.
    const OBJECT: &str = r#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db","namespace":"prod","uid":"4f1c","generation":3,"labels":{"app":"db"},"annotations":{"note":"say \"hi\"\n\u00e9"},"managedFields":[{"manager":"kubectl","operation":"Update","time":"2026-01-02T03:04:05Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{},"k:{\"name\":\"db\"}":{".":{}}}}}]},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"db"}},"serviceName":"db","template":{"metadata":{"labels":{"app":"db"}},"spec":{"containers":[{"name":"db","image":"postgres:16.1","args":["-c","max_connections=100"],"resources":{"limits":{"memory":"1.5Gi"}},"env":[{"name":"A","value":""}]}],"terminationGracePeriodSeconds":30,"securityContext":null}},"volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}],"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":0}}},"status":{"replicas":3,"readyReplicas":3,"observedGeneration":3,"conditions":[]}}"#;

    #[test]
    fn a_chunks_stops_are_each_quote_backslash_and_control_character_in_it() {
        for byte in 0..=u8::MAX {
            for place in 0..16 {
                let mut chunk = [b'a'; 16];
                chunk[place] = byte;
                let expected = if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    1 << place
                } else {
                    0
                };
                assert_eq!(stops(&chunk), expected, "{byte:#x} at {place}");
                assert_eq!(stops_one_by_one(&chunk), expected, "{byte:#x} at {place}");
            }
        }
        let every = *b"\"\\\x00\x1f \x7f\xff\"\\\n\t\rabc\x10";
        assert_eq!(stops(&every), 0b1000_1111_1000_1111);
        assert_eq!(stops_one_by_one(&every), stops(&every));
    }

    /// Whether [`value_end`] takes `text` as one value and whitespace.
    fn skipped(text: &str) -> bool {
        value_end(text.as_bytes(), 0, 0)
            .is_some_and(|end| whitespace_end(text.as_bytes(), end) == text.len())
    }

    /// Each one-byte edit of `text` that is still UTF-8: every byte
    /// dropped, and each of a set of bytes that matter to JSON put in
    /// place of every byte and before it.
    fn edits(text: &str) -> impl Iterator<Item = String> + '_ {
        const BYTES: &[u8] = b"\"\\{}[],: \t\n0-+.eEu/bnx\x01\x1f\x7f";
        let bytes = text.as_bytes();
        (0..bytes.len()).flat_map(move |at| {
            let dropped = [&bytes[..at], &bytes[at + 1..]].concat();
            let put = BYTES.iter().flat_map(move |&b| {
                let replaced = [&bytes[..at], &[b], &bytes[at + 1..]].concat();
                let inserted = [&bytes[..at], &[b], &bytes[at..]].concat();
                [replaced, inserted]
            });
            std::iter::once(dropped)
                .chain(put)
                .filter_map(|edit| String::from_utf8(edit).ok())
        })
    }

    #[test]
    fn a_value_is_skipped_exactly_where_serde_json_skips_it() {
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , -2.5e+3 , 0 , 0.0 , 1E5 , true , false , null , "" ] } "#,
            r#"{"a":{"b":{"c":[[],{}]}}}"#,
            // Each kind of whitespace before each kind of byte.
            "\n{\t\"a\"\r:\n\"b\"\t,\r\"c\" :[ \"d\"\n,\t{ }\r]\n}\t",
            "{\"a\"\x0b:1}",
            r#""\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00 é""#,
            r#""\ud800""#,
            r#"{"\ud800":1}"#,
            r#"{"\udc00x":1}"#,
            r#"{"\ud83d\ude00":1}"#,
            r#"-0"#,
            r#"01"#,
            r#"1."#,
            r#".5"#,
            r#"1e"#,
            r#"1e+"#,
            r#"-"#,
            r#"+1"#,
            r#"tru"#,
            r#"nul"#,
            r#"nulll"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[,1]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"[1 2]"#,
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u123""#,
            "\"a\u{1}b\"",
            "\"tab\tin\"",
            r#""unterminated"#,
            r#"{"a":[}"#,
            r#"[{]}"#,
            r#"1 2"#,
            "",
            " ",
        ];
        for text in cases {
            let by_serde_json = serde_json::from_str::<IgnoredAny>(text).is_ok();
            assert_eq!(skipped(text), by_serde_json, "{text:?}");
        }
        // Long strings, across the 16-byte chunks, ending in each place.
        for len in 0..40 {
            for stop in ["\"", "\\n\"", "\\q\"", "\u{1}\""] {
                let text = format!("\"{}{stop}", "a".repeat(len));
                let by_serde_json = serde_json::from_str::<IgnoredAny>(&text).is_ok();
                assert_eq!(skipped(&text), by_serde_json, "{text:?}");
            }
        }
    }

    /// Where serde_json ends the first value of `text` when it skips it,
    /// whatever follows.
    fn serde_json_end(text: &str) -> Option<usize> {
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<IgnoredAny>();
        values.next()?.ok()?;
        Some(values.byte_offset())
    }

    #[test]
    fn a_value_ends_where_serde_json_ends_it_wherever_its_pieces_fall() {
        // Each piece put after from 0 to 140 bytes of a string, and of
        // whitespace, so that it falls in each place of the scan's 16-byte
        // chunks and across two; what follows the value is not JSON.
        let pieces = [
            r#"\""#,
            r#"\\""#,
            r#"\\\""#,
            r#"\\\\""#,
            r#"\\\\\""#,
            r#"\u00e9\n"#,
            r#"\u00""#,
            r#"\q"#,
            "\u{1}",
            "\u{1f}",
            "\t",
            "é€😀",
            // Runs of backslashes longer than a chunk.
            &r"\\".repeat(40),
            &format!(r#"{}\""#, r"\\".repeat(40)),
            &format!(r#"{}\\""#, r"\\".repeat(40)),
        ];
        let mut taken = 0;
        for pad in 0..140 {
            let a = "a".repeat(pad);
            let space = " \n\t\r".repeat(pad)[..pad].to_string();
            for piece in pieces {
                let texts = [
                    format!(r#"["{a}{piece}","x"]\"]1"#),
                    format!(r#"{{"{a}{piece}":1}}"x\"#),
                    format!(r#"[{space}{piece}]"#),
                    format!(r#"{{"k":[{space}1{piece}2,-0.5e+3,true,null,false]}}]"#),
                    format!(r#"[{space}12.5e3{space},{space}"{piece}"{space}]{piece}"#),
                    format!(r#"[[[{space}"{a}"{piece}]]]"#),
                ];
                for text in texts {
                    let ours = value_end(text.as_bytes(), 0, 0);
                    assert_eq!(ours, serde_json_end(&text), "{text:?}");
                    taken += usize::from(ours.is_some());
                }
            }
        }
        assert!(taken > 2000, "{taken}");
        // Cut short anywhere, an object is not a value; with more after it,
        // it ends where it did.
        for cut in 0..OBJECT.len() {
            assert_eq!(value_end(&OBJECT.as_bytes()[..cut], 0, 0), None, "{cut}");
        }
        let more = format!("{OBJECT}\\\"\u{1}{{");
        assert_eq!(value_end(more.as_bytes(), 0, 0), Some(OBJECT.len()));
    }

    #[test]
    fn every_one_byte_edit_of_an_object_is_skipped_exactly_where_serde_json_skips_it() {
        let mut taken = 0;
        for edit in edits(OBJECT) {
            let by_serde_json = serde_json::from_str::<IgnoredAny>(&edit).is_ok();
            assert_eq!(skipped(&edit), by_serde_json, "{edit}");
            taken += usize::from(by_serde_json);
        }
        // Whitespace put between tokens, and many a change inside a
        // string, leave it JSON.
        assert!(taken > 1000, "{taken}");
    }

    #[test]
    fn every_one_byte_edit_of_an_object_is_read_alike() {
        let mut read = 0;
        for edit in edits(OBJECT) {
            let as_value = (
                from_str::<Value>(&edit).ok(),
                serde_json::from_str::<Value>(&edit).ok(),
            );
            assert_eq!(as_value.0, as_value.1, "as a Value: {edit}");
            let typed = (
                from_str::<StatefulSet>(&edit).ok(),
                serde_json::from_str::<StatefulSet>(&edit).ok(),
            );
            assert_eq!(typed.0, typed.1, "as a StatefulSet: {edit}");
            read += usize::from(typed.0.is_some());
        }
        assert!(read > 1000, "{read}");
    }

    /// An object's members as texts, in order, read as a twin.
    #[derive(Debug, PartialEq)]
    struct Members<'a>(Vec<(String, Text<'a>)>);

    impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Twin;
            impl<'de> Visitor<'de> for Twin {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_newtype_struct<D: Deserializer<'de>>(
                    self,
                    d: D,
                ) -> Result<Members<'de>, D::Error> {
                    d.deserialize_map(Twin)
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Members<'de>, A::Error> {
                    let mut members = Vec::new();
                    while let Some(key) = map.next_key()? {
                        members.push((key, map.next_value()?));
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_newtype_struct(TWIN, Twin)
        }
    }

    /// Twins read by this reader, and how many of the second's texts it
    /// took without a scan.
    fn twins(text: &str) -> (Result<Vec<Members<'_>>, Error>, usize) {
        let mut reader = Reader::new(text);
        let read = serde::Deserialize::deserialize(&mut reader).and_then(|twins| {
            reader.end()?;
            Ok(twins)
        });
        (read, reader.twins.taken)
    }

    #[test]
    fn a_twin_is_read_alike_whether_or_not_its_texts_are_the_others() {
        const SCALARS: &str = r#"{"a":12,"b":-1.5e3,"c":true,"d":null,"e":"x\"y","f":[],"g":{}}"#;
        let mut read = 0;
        let pairs = [OBJECT, SCALARS]
            .into_iter()
            .flat_map(|twin| edits(twin).map(move |edit| (twin, edit)));
        for (twin, edit) in pairs {
            for text in [format!("[{twin},{edit}]"), format!("[{edit},{twin}]")] {
                let ours = twins(&text).0.ok();
                let theirs = serde_json::from_str::<Vec<Members>>(&text).ok();
                assert_eq!(ours, theirs, "{text}");
                read += usize::from(ours.is_some());
            }
        }
        assert!(read > 1000, "{read}");
    }

    #[test]
    fn a_twins_texts_are_taken_unscanned_only_where_they_are_the_others_bytes_at_its_depth() {
        // Of OBJECT's five members, "kind", "apiVersion", "metadata", "spec"
        // and "status", all are strings or objects.
        let both = format!("[{OBJECT},{OBJECT}]");
        let (read, taken) = twins(&both);
        assert_eq!(read.map(|t| t.len()).ok(), Some(2));
        assert_eq!(taken, 5);
        // One changed: the others are still the other's.
        let other = OBJECT.replace("postgres:16.1", "postgres:16.2");
        assert_eq!(twins(&format!("[{OBJECT},{other}]")).1, 4);
        // A number is never taken: its end is the byte after it.
        assert_eq!(twins(r#"[{"a":12,"b":"x"},{"a":123,"b":"x"}]"#).1, 1);
        assert_eq!(twins(r#"[{"a":12},{"a":12}]"#).1, 0);
        // Nor the same bytes at another depth (the second one deeper).
        #[derive(serde::Deserialize)]
        struct Apart<'a> {
            #[serde(borrow)]
            _first: Members<'a>,
            #[serde(borrow)]
            _second: Vec<Members<'a>>,
        }
        let apart = r#"{"_first":{"a":[1]},"_second":[{"a":[1]}]}"#;
        let mut reader = Reader::new(apart);
        assert!(<Apart as serde::Deserialize>::deserialize(&mut reader).is_ok());
        assert_eq!(reader.twins.taken, 0);
        // There, the first's text nested as deep as this reader takes is
        // too deep for the second, twin or not.
        let apart = |levels: usize| {
            let nested = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            format!(r#"{{"_first":{{"a":{nested}}},"_second":[{{"a":{nested}}}]}}"#)
        };
        let (apart, within) = (apart(125), apart(124));
        assert!(from_str::<Value>(&apart).is_err());
        assert!(from_str::<Apart>(&apart).is_err());
        assert!(from_str::<Value>(&within).is_ok());
        assert!(from_str::<Apart>(&within).is_ok());
        // Only a second twin is compared: a third is scanned.
        let three = format!("[{OBJECT},{OBJECT},{OBJECT}]");
        let (read, taken) = twins(&three);
        assert_eq!(read.map(|t| t.len()).ok(), Some(3));
        assert_eq!(taken, 5);
    }

    /// A [`TWIN`] holding `T`.
    #[derive(Debug, PartialEq)]
    struct Twin<T>(T);

    impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Twin<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Twin<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a twin")
                }
                fn visit_newtype_struct<D: Deserializer<'de>>(
                    self,
                    d: D,
                ) -> Result<Twin<T>, D::Error> {
                    T::deserialize(d).map(Twin)
                }
            }
            d.deserialize_newtype_struct(TWIN, V(std::marker::PhantomData))
        }
    }

    /// An object of strings only checked (as annotations are): its keys.
    #[derive(Debug, PartialEq)]
    struct Checked(Vec<String>);

    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            use super::super::schema::AnyString;
            struct Keys;
            impl<'de> Visitor<'de> for Keys {
                type Value = Checked;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of strings")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key()? {
                        map.next_value_seed(AnyString)?;
                        keys.push(key);
                    }
                    Ok(Checked(keys))
                }
            }
            d.deserialize_map(Keys)
        }
    }

    #[test]
    fn a_twins_checked_strings_are_taken_unscanned_only_where_they_are_the_others_bytes() {
        let first = r#"{"a":"x\"y","b":"\u00e9","c":"plain"}"#;
        let cases = [
            (first, 3),
            (r#"{"a":"x\"y","b":"\u00ea","c":"plain"}"#, 2),
            (r#"{"a":"x\"y","b":"\u00e9","c":"plainer"}"#, 2),
            // One more in front: none is at the same count.
            (r#"{"z":"new","a":"x\"y","b":"\u00e9","c":"plain"}"#, 0),
            // Refused, by serde_json too: a control character, a lone
            // surrogate, a string that does not end.
            (
                "{\"a\":\"x\\\"y\",\"b\":\"\\u00e9\",\"c\":\"pl\u{1}ain\"}",
                2,
            ),
            (r#"{"a":"x\"y","b":"\ud800","c":"plain"}"#, 1),
            (r#"{"a":"x\"y","b":"\u00e9","c":"plain}"#, 2),
            (r#"{"a":"x\"y","b":"\u00e9","c":1}"#, 2),
        ];
        for (second, taken) in cases {
            for text in [format!("[{first},{second}]"), format!("[{second},{first}]")] {
                let mut reader = Reader::new(&text);
                let ours = <Vec<Twin<Checked>> as serde::Deserialize>::deserialize(&mut reader)
                    .and_then(|read| reader.end().map(|()| read))
                    .ok();
                let theirs = serde_json::from_str::<Vec<Twin<Checked>>>(&text).ok();
                assert_eq!(ours, theirs, "{text}");
                if text.starts_with(&format!("[{first}")) {
                    assert_eq!(reader.twins.strings_taken, taken, "{text}");
                }
            }
        }
    }

    /// Lists of items in lists of items, in twins.
    type Nested = Vec<Item<Vec<Item<Value>>>>;

    /// Each of the twins' items as its value: one taken as the first's
    /// ([`Item::Same`]) as the first's item of its count.
    fn items_as_values(twins: &[Twin<Nested>]) -> Vec<Value> {
        type ByCount = std::collections::HashMap<usize, Value>;
        fn value(item: &Item<Value>, counted: &mut ByCount) -> Value {
            match item {
                Item::Read(v, count) => {
                    if let Some(c) = count {
                        counted.insert(*c, v.clone());
                    }
                    v.clone()
                }
                Item::Same(c) => counted[c].clone(),
            }
        }
        let mut counted = ByCount::new();
        let mut twin_values = Vec::new();
        for Twin(outer) in twins {
            let mut values = Vec::new();
            for item in outer {
                let inner = match item {
                    Item::Read(inner, count) => {
                        let items = inner.iter().map(|i| value(i, &mut counted)).collect();
                        let inner = Value::Array(items);
                        if let Some(c) = count {
                            counted.insert(*c, inner.clone());
                        }
                        inner
                    }
                    Item::Same(c) => counted[c].clone(),
                };
                values.push(inner);
            }
            twin_values.push(Value::Array(values));
        }
        twin_values
    }

    #[test]
    fn a_twins_items_are_taken_unread_only_where_they_are_the_others_bytes_at_its_depth() {
        // Items, counted in order, an outer one before its own: 0 [{"a":1},"s",3]
        // (1 {"a":1}, 2 "s", 3 3), 4 [{"b":[2]}] (5 {"b":[2]}), 6 [].
        let first = r#"[[{"a":1},"s",3],[{"b":[2]}],[]]"#;
        let cases = [
            // All three outer ones, each whole with its own.
            (first, 3),
            // The first outer one read, for its number; two of its items
            // taken, not the number; the last two outer ones taken.
            (r#"[[{"a":1},"s",4],[{"b":[2]}],[]]"#, 4),
            // One edited inside: its outer one is read, its neighbours taken.
            (r#"[[{"a":1},"s",3],[{"b":[3]}],[]]"#, 2),
            // One more in front: none is at the same count.
            (r#"[[{"z":0},{"a":1},"s",3],[{"b":[2]}],[]]"#, 0),
            // Whitespace inside an item: not the same bytes; its string
            // and the last two outer ones taken.
            (r#"[[{"a": 1},"s",3],[{"b":[2]}],[]]"#, 3),
            // Refused, by serde_json too.
            (r#"[[{"a":1},"s",3],[{"b":[2]}],[}]"#, 2),
            (r#"[[{"a":1},"s",3],[{"b":[2]}],[],]"#, 3),
        ];
        for (second, taken) in cases {
            for text in [format!("[{first},{second}]"), format!("[{second},{first}]")] {
                let mut reader = Reader::new(&text);
                let ours = <Vec<Twin<Nested>> as serde::Deserialize>::deserialize(&mut reader)
                    .and_then(|read| reader.end().map(|()| read))
                    .ok();
                let theirs = serde_json::from_str::<Vec<Value>>(&text).ok();
                assert_eq!(ours.as_deref().map(items_as_values), theirs, "{text}");
                if text.starts_with(&format!("[{first}")) {
                    assert_eq!(reader.twins.items_taken, taken, "{text}");
                }
            }
        }
        // The same bytes one array deeper: read, not taken.
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Deep {
            x: Option<Item<Value>>,
            y: Option<Vec<Item<Value>>>,
        }
        let text = r#"[{"x":{"a":1}},{"y":[{"a":1}]}]"#;
        let mut reader = Reader::new(text);
        let ours: Vec<Twin<Deep>> = serde::Deserialize::deserialize(&mut reader).unwrap();
        assert_eq!(reader.twins.items_taken, 0);
        let y = ours[1].0.y.as_ref().unwrap();
        assert_eq!(y, &[Item::Read(serde_json::json!({"a": 1}), None)]);
        // And not past the twins: a third is read as it is.
        let text = r#"[[{"a":1}],[{"a":1}],[{"a":1}]]"#;
        let mut reader = Reader::new(text);
        let ours: Vec<Twin<Vec<Item<Value>>>> =
            serde::Deserialize::deserialize(&mut reader).unwrap();
        assert_eq!(reader.twins.items_taken, 1);
        assert_eq!(ours[2].0, [Item::Read(serde_json::json!({"a": 1}), None)]);
    }

    /// A string only checked, as an annotation's value is.
    struct CheckedStr;

    impl<'de> serde::Deserialize<'de> for CheckedStr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::super::schema::AnyString
                .deserialize(d)
                .map(|()| CheckedStr)
        }
    }

    #[test]
    fn after_an_item_taken_the_next_texts_and_strings_are_compared_with_the_firsts_after_it() {
        #[derive(serde::Deserialize)]
        struct Inner<'a> {
            #[serde(borrow)]
            v: Text<'a>,
            _s: CheckedStr,
        }
        #[derive(serde::Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            l: Vec<Item<Inner<'a>>>,
            #[serde(borrow)]
            t: Text<'a>,
            _s: CheckedStr,
        }
        // Each item holds a text and a string: after both are taken, the
        // last text and string are the first's third ones.
        let one = r#"{"l":[{"v":[1],"_s":"a"},{"v":[2],"_s":"b"}],"t":[3],"_s":"c"}"#;
        let text = format!("[{one},{one}]");
        let mut reader = Reader::new(&text);
        let read: Vec<Twin<Outer>> = serde::Deserialize::deserialize(&mut reader).unwrap();
        assert_eq!(reader.twins.items_taken, 2);
        assert_eq!((reader.twins.taken, reader.twins.strings_taken), (1, 1));
        assert_eq!(read[1].0.t.get(), "[3]");
        assert!(matches!(read[1].0.l[..], [Item::Same(0), Item::Same(1)]));
        let Item::Read(inner, Some(1)) = &read[0].0.l[1] else {
            panic!("the first's second item, counted");
        };
        assert_eq!(inner.v.get(), "[2]");
    }

    /// Twins read by this reader and by serde_json, alike; how many of the
    /// second's bytes this reader compared instead of scanning, and how
    /// many of its texts it compared in part.
    fn read_alike(first: &str, second: &str) -> (usize, usize) {
        let text = format!("[{first},{second}]");
        let mut reader = Reader::new(&text);
        let ours = serde::Deserialize::deserialize(&mut reader)
            .and_then(|twins: Vec<Members>| reader.end().map(|()| twins));
        let theirs = serde_json::from_str::<Vec<Members>>(&text);
        assert_eq!(ours.ok(), theirs.ok(), "{text}");
        (reader.twins.unscanned, reader.twins.partly)
    }

    #[test]
    fn a_second_twin_is_scanned_only_near_where_it_differs() {
        // How many bytes of the second's member texts were scanned.
        let scanned = |first: &str, second: &str| {
            let members = serde_json::from_str::<Members>(second).unwrap().0;
            let texts: usize = members.iter().map(|(_, text)| text.get().len()).sum();
            texts - read_alike(first, second).0
        };
        // The same object twice: none.
        assert_eq!(scanned(OBJECT, OBJECT), 0);
        // An image two bytes longer: from the last mark before it to the
        // next after it, and the few bytes the anchor is looked for in.
        let longer = OBJECT.replace("postgres:16.1", "postgres:16.100");
        let one = scanned(OBJECT, &longer);
        assert!((1..3 * MARK_EVERY).contains(&one), "{one}");
        // Two changes, one shorter.
        let two = longer.replace("max_connections=100", "max_connections=9");
        assert!((one..6 * MARK_EVERY).contains(&scanned(OBJECT, &two)));
        // An env entry more, and one fewer.
        let more = OBJECT.replace(
            r#"{"name":"A","value":""}"#,
            r#"{"name":"A","value":""},{"name":"B","value":"b"}"#,
        );
        assert!(scanned(OBJECT, &more) < 4 * MARK_EVERY);
        assert!(scanned(&more, OBJECT) < 4 * MARK_EVERY);
        // Nested one level deeper in the middle: scanned until the two are
        // nested alike again.
        let deeper = OBJECT.replace(
            r#"["-c","max_connections=100"]"#,
            r#"[["-c","max_connections=100"]]"#,
        );
        assert!(scanned(OBJECT, &deeper) < 4 * MARK_EVERY);
    }

    #[test]
    fn twins_edited_at_random_in_several_places_are_read_alike() {
        // Three objects in one: room for many marks and anchors.
        let big = format!(r#"{{"a":{OBJECT},"b":{OBJECT},"c":{OBJECT}}}"#);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % below as u64) as usize
        };
        const BYTES: &[u8] = b"\"\\{}[],:0-.e ax";
        let (mut read, mut compared_in_part) = (0, 0);
        for _ in 0..3000 {
            let mut edited = big.clone().into_bytes();
            for _ in 0..1 + next(4) {
                let at = next(edited.len());
                let to = (at + 1 + next(300)).min(edited.len());
                match next(5) {
                    0 => edited[at] = BYTES[next(BYTES.len())],
                    1 => edited.insert(at, BYTES[next(BYTES.len())]),
                    2 => drop(edited.drain(at..to)),
                    // A stretch given twice, or moved.
                    3 => {
                        let stretch = edited[at..to].to_vec();
                        edited.splice(at..at, stretch);
                    }
                    _ => {
                        let stretch: Vec<u8> = edited.drain(at..to).collect();
                        let into = next(edited.len() + 1);
                        edited.splice(into..into, stretch);
                    }
                }
            }
            let Ok(edited) = String::from_utf8(edited) else {
                continue;
            };
            let (_, partly) = read_alike(&big, &edited);
            read_alike(&edited, &big);
            if serde_json::from_str::<Members>(&edited).is_ok() {
                read += 1;
                compared_in_part += usize::from(partly > 0);
            }
        }
        // Most edits break the JSON; enough do not.
        assert!(
            read > 300 && compared_in_part > 200,
            "{read} read, {compared_in_part} compared in part"
        );
    }

    #[test]
    fn twins_that_differ_in_many_ways_are_read_alike() {
        let reordered = OBJECT
            .replace(r#""serviceName":"db","template""#, r#""template""#)
            .replace(
                r#""volumeClaimTemplates""#,
                r#""serviceName":"db","volumeClaimTemplates""#,
            );
        let variants = [
            OBJECT.replace("postgres:16.1", "postgres:16.100"),
            OBJECT.replace("postgres:16.1", "p"),
            OBJECT.replace("postgres:16.1", r#"postgres:16.1\u00e9\"x"#),
            OBJECT.replace("postgres:16.1", "postgres:16.1é€😀"),
            OBJECT.replace(r#""1.5Gi""#, r#"{"a":[1,2,{"b":null}]}"#),
            OBJECT.replace(r#""1.5Gi""#, "1.5e3"),
            OBJECT.replace(r#""replicas":3,"#, ""),
            OBJECT.replace(
                r#"{"name":"A","value":""}"#,
                r#"{"name":"A","value":""},{"name":"B","value":"b"}"#,
            ),
            OBJECT.replace(r#"\"hi\""#, "hi"),
            OBJECT.replace(",", " , "),
            reordered,
            // Broken after the difference, or by it.
            OBJECT.replace("postgres:16.1", "postgres\"16.1"),
            OBJECT.replace(r#""args":["-c","#, r#""args":[["-c","#),
            OBJECT.replace(r#""1Gi"}}}]"#, r#""1Gi"}}}"#),
            OBJECT.replace("postgres:16.1", r#"postgres:16.1\u00"#),
        ];
        for variant in &variants {
            read_alike(OBJECT, variant);
            read_alike(variant, OBJECT);
            // A second edit anywhere in it.
            for edit in edits(variant).step_by(7) {
                read_alike(OBJECT, &edit);
            }
        }
    }

    #[test]
    fn a_second_twin_nested_past_the_limit_where_it_differs_is_refused() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        // Inside [ and the twin's {"a": ..}: two levels more.
        let twin = |n: usize| format!(r#"{{"a":{},"b":"{}"}}"#, nested(n), "x".repeat(200));
        let (within, past) = (twin(MAX_NESTING - 2), twin(MAX_NESTING - 1));
        assert!(from_str::<Vec<Members>>(&format!("[{within},{within}]")).is_ok());
        for text in [format!("[{within},{past}]"), format!("[{past},{within}]")] {
            assert!(from_str::<Vec<Members>>(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_text_is_the_value_as_sent_and_an_ignored_value_is_still_checked() {
        #[derive(serde::Deserialize)]
        struct Kept<'a> {
            #[serde(borrow)]
            kept: Text<'a>,
            #[allow(dead_code)]
            skipped: IgnoredAny,
        }
        let text = r#"{"kept": { "a" : [1, "\u00e9"] } , "skipped": [true]}"#;
        let read: Kept = from_str(text).unwrap();
        assert_eq!(read.kept.get(), r#"{ "a" : [1, "\u00e9"] }"#);
        // The same from serde_json, through its own raw value.
        let read: Kept = serde_json::from_str(text).unwrap();
        assert_eq!(read.kept.get(), r#"{ "a" : [1, "\u00e9"] }"#);
        for broken in [
            r#"{"kept": [1,], "skipped": 1}"#,
            r#"{"kept": 1, "skipped": [01]}"#,
        ] {
            assert!(from_str::<Kept>(broken).is_err(), "{broken}");
            assert!(serde_json::from_str::<Kept>(broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn nesting_is_taken_up_to_serde_jsons_limit_and_refused_past_it() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let within = nested(MAX_NESTING);
        assert!(skipped(&within));
        assert!(from_str::<Value>(&within).is_ok());
        assert!(serde_json::from_str::<Value>(&within).is_ok());
        let past = nested(MAX_NESTING + 1);
        assert!(!skipped(&past));
        assert!(from_str::<Value>(&past).is_err());
        assert!(serde_json::from_str::<Value>(&past).is_err());
        // Inside a value already open, the limit counts from the top.
        let inside = format!("{{\"a\":{}}}", nested(MAX_NESTING));
        assert!(from_str::<Value>(&inside).is_err());
        assert!(from_str::<IgnoredAny>(&inside).is_err());
        assert!(serde_json::from_str::<Value>(&inside).is_err());
    }

    /// Types that read less than serde's own: the reader must still fail
    /// where serde_json fails (found by an independent differential fuzz).
    #[test]
    fn a_type_that_reads_little_or_swallows_a_failure_is_refused_as_by_serde_json() {
        // An item that reads nothing: the trailing comma is still refused.
        struct Nothing;
        impl<'de> serde::Deserialize<'de> for Nothing {
            fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Ok(Nothing)
            }
        }
        for text in ["[,]", "[,,]", "[1,]"] {
            assert!(from_str::<Vec<Nothing>>(text).is_err(), "{text}");
            assert!(
                serde_json::from_str::<Vec<Nothing>>(text).is_err(),
                "{text}"
            );
        }
        // A key ignored is still a string checked: no lone surrogate.
        struct Keys;
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Each;
                impl<'de> Visitor<'de> for Each {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        Ok(Keys)
                    }
                }
                d.deserialize_map(Each)
            }
        }
        for text in [r#"{"\ud800":1}"#, r#"{"\udc00":1}"#] {
            assert!(from_str::<Keys>(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Keys>(text).is_err(), "{text}");
        }
        assert!(from_str::<Keys>(r#"{"\u00e9":1}"#).is_ok());
        // A field that swallows its failure: serde_json took nothing of
        // the value, and fails on it next; so does this reader.
        #[derive(serde::Deserialize, Debug)]
        struct Lenient {
            #[serde(deserialize_with = "lenient")]
            #[allow(dead_code)]
            a: Option<Vec<u32>>,
            #[allow(dead_code)]
            b: u32,
        }
        fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
            Ok(<Vec<u32> as serde::Deserialize>::deserialize(d).ok())
        }
        let text = r#"{"a":{"k":1},"b":2}"#;
        assert!(from_str::<Lenient>(text).is_err());
        assert!(serde_json::from_str::<Lenient>(text).is_err());
    }

    #[test]
    fn a_string_only_checked_is_taken_exactly_where_serde_json_takes_a_string() {
        use super::super::schema::AnyString;
        let check = |text: &str| {
            let by_serde_json = {
                let mut de = serde_json::Deserializer::from_str(text);
                AnyString
                    .deserialize(&mut de)
                    .and_then(|()| de.end())
                    .is_ok()
            };
            assert_eq!(
                from_str_seed(text, AnyString).is_ok(),
                by_serde_json,
                "{text:?}"
            );
            by_serde_json
        };
        let cases = [
            r#""plain""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
            r#""\x""#,
            r#""\u12g4""#,
            "\"a\u{1}b\"",
            r#""unterminated"#,
            "1",
            "null",
            "[]",
            "{}",
        ];
        let taken: Vec<_> = cases.iter().filter(|text| check(text)).collect();
        assert_eq!(taken.len(), 4, "{taken:?}");
        // kubectl's last-applied annotation is such a string.
        let annotation = r#""{\"apiVersion\":\"apps/v1\",\"metadata\":{\"name\":\"d\u00e9\"}}\n""#;
        let mut taken = 0;
        for edit in std::iter::once(annotation.to_string()).chain(edits(annotation)) {
            taken += usize::from(check(&edit));
        }
        assert!(taken > 100, "{taken}");
    }

    #[test]
    fn a_string_only_checked_is_left_undecoded_unless_it_has_a_unicode_escape() {
        struct Probe;
        impl<'de> Visitor<'de> for Probe {
            type Value = &'static str;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_unit<E: de::Error>(self) -> Result<&'static str, E> {
                Ok("undecoded")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<&'static str, D::Error> {
                d.deserialize_string(self)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<&'static str, E> {
                Ok("decoded")
            }
        }
        let read = |text: &str| {
            let mut reader = Reader::new(text);
            (&mut reader).deserialize_newtype_struct(CHECKED_STRING, Probe)
        };
        assert_eq!(read(r#""a\"b\n""#).unwrap(), "undecoded");
        assert_eq!(read(r#""plain""#).unwrap(), "undecoded");
        assert_eq!(read(r#""\u00e9""#).unwrap(), "decoded");
        assert!(read(r#""\ud800""#).is_err());
        assert!(read("1").is_err());
    }

    #[test]
    fn separators_are_counted_in_every_place_across_the_16_byte_chunks() {
        let naive = |text: &[u8]| {
            text.iter()
                .filter(|b| matches!(b, b'{' | b'[' | b',' | b':'))
                .count()
        };
        // Over each cap near the count, exactly when the count is.
        let over_alike = |text: &[u8]| {
            let count = naive(text);
            for cap in [0, count.saturating_sub(1), count, count + 1, text.len()] {
                assert_eq!(
                    separators_over(text, cap),
                    count > cap,
                    "{cap} {:?}",
                    String::from_utf8_lossy(text)
                );
            }
        };
        for len in 0..50 {
            for at in 0..len {
                for b in b"{[,:}]\"a" {
                    let mut text = b"a\"b".repeat(len)[..len].to_vec();
                    text[at] = *b;
                    text.extend_from_slice(&b"{,"[..len % 3 % 2]);
                    over_alike(&text);
                }
            }
        }
        over_alike(&b"{[,:".repeat(100));
        // Past the 64 chunks a byte lane counts before the lanes are summed
        // and the count is weighed.
        for len in [64 * 16, 64 * 16 + 1, 255 * 16 + 17, 3 * 255 * 16] {
            over_alike(&b",".repeat(len));
            over_alike(&b"a:".repeat(len));
        }
        // The separators all at the end, or all at the start, of a long
        // text: it stops early only where the rest cannot change the answer.
        for (a, commas) in [(10_000, 100), (3000, 2000)] {
            let end = [b"a".repeat(a), b",".repeat(commas)].concat();
            let start = [b",".repeat(commas), b"a".repeat(a)].concat();
            for text in [end, start] {
                over_alike(&text);
                assert!(separators_over(&text, commas - 1));
                assert!(!separators_over(&text, commas));
            }
        }
        assert!(!separators_over(b"", 0));
    }

    #[test]
    fn a_body_is_text_exactly_when_it_is_utf8() {
        let ascii = r#"{"a":"b","c":[1,2]}"#.repeat(20);
        let mut bodies = vec![ascii.clone().into_bytes(), Vec::new()];
        // A byte that is not ASCII in each place, across the 64-byte blocks
        // and the tail: valid (é), cut short, or invalid on its own.
        for at in (0..ascii.len()).step_by(7) {
            for odd in [&b"\xc3\xa9"[..], b"\xc3", b"\xff", b"\x80"] {
                let mut body = ascii.clone().into_bytes();
                body.splice(at..at, odd.iter().copied());
                bodies.push(body);
            }
        }
        for body in &bodies {
            assert_eq!(utf8(body), std::str::from_utf8(body).ok(), "{body:?}");
        }
        assert_eq!(utf8(ascii.as_bytes()), Some(ascii.as_str()));
    }

    #[test]
    fn keys_with_escapes_are_decoded_and_strings_without_are_lent() {
        let read: std::collections::BTreeMap<String, String> =
            from_str(r#"{"sp\u0065c": "a\"b", "plain": "c"}"#).unwrap();
        assert_eq!(read["spec"], "a\"b");
        assert_eq!(read["plain"], "c");
        let lent: std::collections::BTreeMap<&str, &str> = from_str(r#"{"plain": "c"}"#).unwrap();
        assert_eq!(lent["plain"], "c");
        // An escaped string cannot be lent, by this reader or serde_json.
        assert!(from_str::<std::collections::BTreeMap<&str, &str>>(r#"{"a": "\n"}"#).is_err());
        assert!(
            serde_json::from_str::<std::collections::BTreeMap<&str, &str>>(r#"{"a": "\n"}"#)
                .is_err()
        );
    }
}
