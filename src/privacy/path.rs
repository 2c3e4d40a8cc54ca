//! Rule paths: which values a `hash` or `drop` rule takes. `outputs`, `error`,
//! `inputs.<name>` and `all_outputs.<node>` name a run's field (or one entry of it), `*` any
//! name; a JSON pointer after them (`all_outputs.model/choices/*/message/content`) a value
//! inside a nested one, `*` any key or index. Parsing is strict and says what it expected;
//! applying a rule to a parsed value is pure.

use serde_json::Value;

/// A run field a rule starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The run's `outputs`.
    Outputs,
    /// The run's `error`.
    Error,
    /// Entries of the run's `inputs`.
    Inputs(Name),
    /// Entries of the run's `all_outputs`.
    AllOutputs(Name),
}

/// An entry name, or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Any,
    Is(String),
}

impl Name {
    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Name::Any => true,
            Name::Is(n) => n == name,
        }
    }
}

/// A parsed rule path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePath {
    /// The field.
    pub field: Field,
    /// Pointer segments inside the value (`Name::Any` for `*`); empty for the whole value.
    pub pointer: Vec<Name>,
    /// The path as written, for messages and the manifest.
    pub text: String,
}

/// The fields a path may start with, for messages.
pub const FIELDS: &str = "`outputs`, `error`, `inputs.<name>` or `all_outputs.<node>` (`*` for any name), optionally followed by a JSON pointer such as `/choices/0/message/content`";

impl RulePath {
    /// Parses `text`; the error says what a path looks like.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{text}` is not a field path: {why}; a path is {FIELDS}");
        let (head, pointer) = match text.find('/') {
            Some(i) => (&text[..i], &text[i..]),
            None => (text, ""),
        };
        let name = |rest: &str| -> Result<Name, String> {
            match rest {
                "" => Err(bad("the entry's name is missing")),
                "*" => Ok(Name::Any),
                n => Ok(Name::Is(unescape_segment(n))),
            }
        };
        let field = match head.split_once('.') {
            None if head == "outputs" => Field::Outputs,
            None if head == "error" => Field::Error,
            None if head == "inputs" || head == "all_outputs" => {
                return Err(bad(&format!(
                    "name the entry: `{head}.<name>`, or `{head}.*` for all of them"
                )));
            }
            Some(("inputs", rest)) => Field::Inputs(name(rest)?),
            Some(("all_outputs", rest)) => Field::AllOutputs(name(rest)?),
            _ => {
                let suggestion = ["outputs", "error", "inputs", "all_outputs"]
                    .into_iter()
                    .map(|f| {
                        (
                            strsim::damerau_levenshtein(head.split('.').next().unwrap_or(head), f),
                            f,
                        )
                    })
                    .filter(|(d, _)| *d <= 2)
                    .min();
                return Err(match suggestion {
                    Some((_, f)) => bad(&format!("unknown field; did you mean `{f}`?")),
                    None => bad("unknown field"),
                });
            }
        };
        let pointer = if pointer.is_empty() {
            Vec::new()
        } else {
            pointer[1..]
                .split('/')
                .map(|s| match s {
                    "*" => Name::Any,
                    s => Name::Is(unescape_segment(s)),
                })
                .collect()
        };
        Ok(RulePath {
            field,
            pointer,
            text: text.to_owned(),
        })
    }
}

impl RulePath {
    /// Whether this path and `other` can select the same value (one within the other).
    pub fn overlaps(&self, other: &RulePath) -> bool {
        let names = |a: &Name, b: &Name| match (a, b) {
            (Name::Is(x), Name::Is(y)) => x == y,
            _ => true,
        };
        let fields = match (&self.field, &other.field) {
            (Field::Outputs, Field::Outputs) | (Field::Error, Field::Error) => true,
            (Field::Inputs(a), Field::Inputs(b)) | (Field::AllOutputs(a), Field::AllOutputs(b)) => {
                names(a, b)
            }
            _ => false,
        };
        fields
            && self
                .pointer
                .iter()
                .zip(&other.pointer)
                .all(|(a, b)| names(a, b))
    }
}

/// A JSON pointer segment's escapes: `~1` is `/`, `~0` is `~`.
fn unescape_segment(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Replaces every value `pointer` selects inside `value` with what `act` returns for it (it is
/// given the value and returns its replacement); whether anything was selected.
pub fn apply(value: &mut Value, pointer: &[Name], act: &mut dyn FnMut(&Value) -> Value) -> bool {
    let Some((first, rest)) = pointer.split_first() else {
        if value.is_null() {
            return false;
        }
        *value = act(value);
        return true;
    };
    match value {
        Value::Object(map) => {
            let mut any = false;
            for (k, v) in map.iter_mut() {
                if first.matches(k) {
                    any |= apply(v, rest, act);
                }
            }
            any
        }
        Value::Array(items) => {
            let mut any = false;
            for (i, v) in items.iter_mut().enumerate() {
                if first.matches(&i.to_string()) {
                    any |= apply(v, rest, act);
                }
            }
            any
        }
        _ => false,
    }
}

/// [`apply`] to the entries of `value` (an object) that `name` selects; whether anything was
/// selected. Anything but an object has no entries.
pub fn apply_to_entries(
    value: &mut Value,
    name: &Name,
    pointer: &[Name],
    act: &mut dyn FnMut(&Value) -> Value,
) -> bool {
    let Value::Object(entries) = value else {
        return false;
    };
    let mut any = false;
    for (k, v) in entries.iter_mut() {
        if name.matches(k) {
            any |= apply(v, pointer, act);
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_or_say_what_a_path_is() {
        let ok = [
            ("outputs", Field::Outputs, 0),
            ("error", Field::Error, 0),
            (
                "inputs.user_id",
                Field::Inputs(Name::Is("user_id".into())),
                0,
            ),
            ("inputs.*", Field::Inputs(Name::Any), 0),
            (
                "all_outputs.retriever",
                Field::AllOutputs(Name::Is("retriever".into())),
                0,
            ),
            (
                "all_outputs.model/choices/*/message/content",
                Field::AllOutputs(Name::Is("model".into())),
                4,
            ),
            (
                "all_outputs.a.b~1c",
                Field::AllOutputs(Name::Is("a.b/c".into())),
                0,
            ),
            ("outputs/answer", Field::Outputs, 1),
        ];
        for (text, field, depth) in ok {
            let p = RulePath::parse(text).unwrap();
            assert_eq!((p.field, p.pointer.len()), (field, depth), "{text}");
        }
        let bad = [
            ("input.user_id", "did you mean `inputs`?"),
            ("inputs", "name the entry: `inputs.<name>`"),
            ("inputs.", "the entry's name is missing"),
            ("status", "unknown field"),
            ("", "unknown field"),
        ];
        for (text, want) in bad {
            let e = RulePath::parse(text).unwrap_err();
            assert!(e.contains(want) && e.contains("a path is"), "{text}: {e}");
        }
    }

    #[test]
    fn paths_overlap_when_one_holds_the_other() {
        let table = [
            ("inputs.user_id", "inputs.*", true),
            ("inputs.user_id", "inputs.user_id/x", true),
            ("inputs.a", "inputs.b", false),
            (
                "all_outputs.m/choices/*/message",
                "all_outputs.m/choices/0",
                true,
            ),
            ("all_outputs.m/choices/0", "all_outputs.m/usage", false),
            ("outputs", "error", false),
            ("inputs.x", "all_outputs.x", false),
        ];
        for (a, b, want) in table {
            let (a, b) = (RulePath::parse(a).unwrap(), RulePath::parse(b).unwrap());
            assert_eq!(a.overlaps(&b), want, "{} {}", a.text, b.text);
            assert_eq!(b.overlaps(&a), want);
        }
    }

    #[test]
    fn pointers_select_values_at_any_depth() {
        let mut v = json!({"choices": [{"message": {"content": "a", "role": "x"}}, {"message": {"content": "b"}}], "usage": null});
        let p = RulePath::parse("all_outputs.m/choices/*/message/content").unwrap();
        let mut seen = Vec::new();
        assert!(apply(&mut v, &p.pointer, &mut |old| {
            seen.push(old.clone());
            Value::Null
        }));
        assert_eq!(seen, [json!("a"), json!("b")]);
        assert_eq!(
            v["choices"][0]["message"],
            json!({"content": null, "role": "x"})
        );
        let p = RulePath::parse("all_outputs.m/usage").unwrap();
        assert!(
            !apply(&mut v, &p.pointer, &mut |_| json!("x")),
            "null stays null"
        );
        let p = RulePath::parse("all_outputs.m/choices/1/message").unwrap();
        assert!(apply(&mut v, &p.pointer, &mut |_| json!("h")));
        assert_eq!(v["choices"][1], json!({"message": "h"}));
        assert!(!apply(&mut json!("text"), &p.pointer, &mut |_| json!("h")));
    }
}
