//! Field paths such as `spec.ports[1].number`, and finding them in a YAML tree.

use std::{collections::VecDeque, fmt};

use super::yaml::{Mark, Node, Value};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from a document's root to one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(VecDeque<Seg>);

impl FieldPath {
    /// The path of a top-level field.
    pub fn root(key: &str) -> Self {
        FieldPath(VecDeque::from([Seg::Key(key.to_owned())]))
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push_back(Seg::Key(key.to_owned()));
        p
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push_back(Seg::Index(i));
        p
    }

    /// Puts `seg` in front.
    pub fn push_front(&mut self, seg: Seg) {
        self.0.push_front(seg);
    }

    /// This path after `prefix`.
    pub fn under(mut self, prefix: &FieldPath) -> Self {
        for seg in prefix.0.iter().rev() {
            self.0.push_front(seg.clone());
        }
        self
    }

    /// True for the empty path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The mark of the deepest node of `root` along this path (the field itself when present).
    pub fn locate(&self, root: &Node) -> Mark {
        let mut node = root;
        for seg in &self.0 {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k).or_else(|| {
                    // Keys written as numbers (`7777: 80`) are found by their text too.
                    match &node.value {
                        Value::Map(entries) => entries
                            .iter()
                            .find(|(key, _)| matches!(&key.value, Value::Int(i) if i.to_string() == *k))
                            .map(|(_, v)| v),
                        _ => None,
                    }
                }),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.mark
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let p = FieldPath::root("spec").key("ports").index(1).key("number");
        assert_eq!(p.to_string(), "spec.ports[1].number");
        let p = FieldPath::root("spec")
            .key("labels")
            .key("security.istio.io/tlsMode");
        assert_eq!(p.to_string(), "spec.labels[\"security.istio.io/tlsMode\"]");
    }
}
