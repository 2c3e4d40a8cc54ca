//! The policy applied to parsed values: records kept in `_rejected/`, the steps of a run, and
//! the messages and error bodies that may quote them. [`Hidden`] carries what the rules replaced
//! in one run, so the same texts are replaced wherever else the run holds them.

use std::borrow::Cow;

use serde_json::Value;

use super::{Action, Field, Policy, path, text_of};

/// Shortest text [`Hidden`] replaces elsewhere: shorter ones would hit ordinary words.
const MIN_HIDDEN_CHARS: usize = 4;

/// What the rules replaced in one run: each original text — the value's, and every string
/// inside it — with what replaced it (its digest, `[hashed]` inside a hashed value, or
/// `[dropped]`), to replace it wherever else the run holds it (its other cells, its steps), and
/// the keys inside replaced values, to hide them in messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    /// (original text, the same as it appears inside a JSON string, what replaces it).
    texts: Vec<(String, String, String)>,
    keys: Vec<String>,
}

impl Hidden {
    /// Whether nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty() && self.keys.is_empty()
    }

    /// Notes that `action` replaced `old`; `digest` is what a hash replaced it with.
    pub fn note(&mut self, action: Action, old: &Value, digest: Option<&str>) {
        let whole = match (action, old, digest) {
            (Action::Hash, _, Some(d)) => d.to_owned(),
            (Action::Hash, ..) => "[hashed]".to_owned(),
            (Action::Drop, ..) => "[dropped]".to_owned(),
        };
        self.push(text_of(old), whole);
        let inside = match action {
            Action::Hash => "[hashed]",
            Action::Drop => "[dropped]",
        };
        self.note_inside(old, inside);
    }

    fn note_inside(&mut self, value: &Value, with: &str) {
        match value {
            Value::String(s) => self.push(s.clone(), with.to_owned()),
            Value::Array(items) => items.iter().for_each(|v| self.note_inside(v, with)),
            Value::Object(map) => {
                for (k, v) in map {
                    if k.chars().count() >= MIN_HIDDEN_CHARS && !self.keys.contains(k) {
                        self.keys.push(k.clone());
                    }
                    self.note_inside(v, with);
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, text: String, with: String) {
        if text.chars().count() >= MIN_HIDDEN_CHARS && !self.texts.iter().any(|(t, ..)| *t == text)
        {
            let quoted = serde_json::to_string(&text).unwrap_or_default();
            let escaped = quoted[1..quoted.len() - 1].to_owned();
            self.texts.push((text, escaped, with));
            // Longer texts first: a text containing another is replaced whole.
            self.texts.sort_by_key(|(t, ..)| std::cmp::Reverse(t.len()));
        }
    }

    /// `text` (a string's content) with every hidden text in it replaced.
    pub fn in_text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for (hidden, _, with) in &self.texts {
            if memchr::memmem::find(out.as_bytes(), hidden.as_bytes()).is_some() {
                out = Cow::Owned(out.replace(hidden.as_str(), with));
            }
        }
        out
    }

    /// A JSON text with every hidden text in its strings replaced (they appear escaped there);
    /// `None` when none is in it.
    pub fn in_json(&self, json: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (_, needle, with) in &self.texts {
            let current = out.as_deref().unwrap_or(json);
            if memchr::memmem::find(current.as_bytes(), needle.as_bytes()).is_some() {
                out = Some(current.replace(needle.as_str(), with));
            }
        }
        out
    }

    /// Replaces hidden texts in every string of `value`; whether any was.
    pub fn in_value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(s) => match self.in_text(s) {
                Cow::Owned(t) => {
                    *s = t;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |any, v| self.in_value(v) | any),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |any, v| self.in_value(v) | any),
            _ => false,
        }
    }

    /// A message with every hidden text and key in it shown as `[hidden]`.
    pub fn in_message(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for hidden in self.texts.iter().map(|(t, ..)| t).chain(&self.keys) {
            if out.contains(hidden.as_str()) {
                out = out.replace(hidden.as_str(), "[hidden]");
            }
        }
        out
    }
}

impl Policy {
    /// What `action` turns `old` into, noted in `hidden`.
    pub fn act_hiding(&self, action: Action, old: &Value, hidden: &mut Hidden) -> Value {
        let new = self.act(action, old);
        hidden.note(action, old, new.as_str());
        new
    }

    /// Applies the policy to a record shaped like a run (`_rejected/` keeps records): its
    /// rules, then what they replaced wherever else the record holds it, then the masks to
    /// every string in it. A record that is not an object cannot have its fields found: when
    /// paths are hashed or dropped it is withheld (replaced by a note of its size). Returns what
    /// the rules replaced, so messages quoting it can hide it too.
    pub fn protect_record(&self, record: &mut Value) -> Hidden {
        let mut hidden = Hidden::default();
        if self.is_empty() {
            return hidden;
        }
        match record {
            Value::Object(map) => {
                for (action, rule) in self.rules() {
                    let (field, name) = match &rule.field {
                        Field::Outputs => ("outputs", None),
                        Field::Error => ("error", None),
                        Field::Inputs(n) => ("inputs", Some(n)),
                        Field::AllOutputs(n) => ("all_outputs", Some(n)),
                    };
                    let Some(value) = map.get_mut(field) else {
                        continue;
                    };
                    let mut act = |old: &Value| self.act_hiding(action, old, &mut hidden);
                    match name {
                        None => {
                            path::apply(value, &rule.pointer, &mut act);
                        }
                        Some(name) => {
                            path::apply_to_entries(value, name, &rule.pointer, &mut act);
                        }
                    }
                }
                hidden.in_value(record);
            }
            other if self.has_path_rules() => {
                let bytes = other.to_string().len();
                *other = Value::String(withheld(bytes, "the record is not an object"));
                self.count(Some(Action::Drop));
                return hidden;
            }
            _ => {}
        }
        if self.masker.mask_value(record) {
            self.count(None);
        }
        hidden
    }

    /// A message about a record: what the rules replaced in it hidden, then masked.
    pub fn protect_message(&self, message: &str, hidden: &Hidden) -> String {
        self.masker.mask(&hidden.in_message(message)).into_owned()
    }

    /// Text that is not JSON (a record that does not parse, an error body): masked, its
    /// escapes decoded first so an escaped `@` (`\u0040`) is still found; withheld when paths
    /// are hashed or dropped, since the fields they name cannot be found in it.
    pub fn protect_text(&self, text: &str, why: &str) -> Cow<'_, str> {
        if self.is_empty() || text.trim().is_empty() {
            return Cow::Owned(text.to_owned());
        }
        if self.has_path_rules() {
            return Cow::Owned(withheld(text.len(), why));
        }
        let decoded = if text.contains("\\u") {
            crate::json_text::decode_escapes(text)
        } else {
            Cow::Borrowed(text)
        };
        let masked = self.masker.mask(&decoded);
        if matches!(masked, Cow::Owned(_)) {
            self.count(None);
            return Cow::Owned(masked.into_owned());
        }
        Cow::Owned(text.to_owned())
    }

    /// An error body the API sent, as it may be quoted ([`Policy::protect_text`]).
    pub fn protect_body(&self, body: &str) -> String {
        self.protect_text(body, "it may quote the fields the policy hashes or drops")
            .into_owned()
    }

    /// Applies the policy to one step of `GET …/steps`: `error` rules to its `error`,
    /// `inputs.<name>` rules to the entries of its `inputs`, and an `all_outputs.<node>` rule
    /// to the whole `outputs` of that node's steps (their shape is the endpoint's, not the
    /// run's, so a pointer inside is not followed: the whole value is taken); then what the
    /// rules replaced in its run (`run_hidden`) and in the step wherever else the step holds it
    /// (a later step's inputs carry an earlier node's outputs); then masks the strings of
    /// `error`, `outputs` and `inputs`, and the node id like any name.
    pub fn protect_step(&self, step: &mut Value, run_hidden: &Hidden) {
        if self.is_empty() {
            return;
        }
        let node = step
            .get("node_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Value::Object(map) = step else {
            return;
        };
        let mut hidden = run_hidden.clone();
        for (action, rule) in self.rules() {
            let mut act = |old: &Value| self.act_hiding(action, old, &mut hidden);
            match &rule.field {
                Field::Error => {
                    if let Some(v) = map.get_mut("error") {
                        path::apply(v, &rule.pointer, &mut act);
                    }
                }
                Field::Inputs(name) => {
                    if let Some(inputs) = map.get_mut("inputs") {
                        path::apply_to_entries(inputs, name, &rule.pointer, &mut act);
                    }
                }
                Field::AllOutputs(name) if node.as_deref().is_some_and(|n| name.matches(n)) => {
                    if let Some(v) = map.get_mut("outputs") {
                        path::apply(v, &[], &mut act);
                    }
                }
                Field::AllOutputs(_) | Field::Outputs => {}
            }
        }
        for field in ["error", "outputs", "inputs", "node_id"] {
            if let Some(v) = map.get_mut(field) {
                hidden.in_value(v);
                if self.masker.mask_value(v) && field != "node_id" {
                    self.count(None);
                }
            }
        }
    }
}

/// The note that replaces a value withheld whole.
fn withheld(bytes: usize, why: &str) -> String {
    format!("[{bytes} bytes withheld by the privacy policy: {why}]")
}
