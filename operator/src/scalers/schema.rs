//! The parameters of every trigger type, declared next to the code that reads them with the
//! [`parameters!`] macro, whose doc comments become the descriptions of the generated
//! reference (`operator/scaler-parameters.md`) and JSON Schema
//! (`operator/scaler-parameters.schema.json`). A test keeps both files current, and the
//! compliance suite checks that a scaler reads no parameter its declaration leaves out.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::params::Source;

/// How a parameter's value is read. Every value is text in the ScaledObject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// A whole number.
    Integer,
    /// A decimal number.
    Number,
    /// `true`/`false` (Go's `strconv.ParseBool` spellings).
    Bool,
    /// One of a fixed set of words (the description names them).
    Choice,
    /// A comma-separated list.
    List,
    /// A secret (password, token, key): never plain metadata unless the description says so.
    Secret,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::Choice => "choice",
            Self::List => "list",
            Self::Secret => "secret",
        }
    }

    /// A pattern the text of a value must match, where one says more than "a string".
    fn pattern(self) -> Option<&'static str> {
        match self {
            Self::Integer => Some("^\\s*[-+]?[0-9]+\\s*$"),
            Self::Bool => Some("^\\s*(1|t|T|TRUE|true|True|0|f|F|FALSE|false|False)\\s*$"),
            _ => None,
        }
    }
}

/// One parameter of a trigger type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parameter {
    /// The key, as in KEDA.
    pub name: &'static str,
    pub kind: Kind,
    /// Whether the trigger is refused without it (from any of its sources).
    pub required: bool,
    /// The value used when it is not given.
    pub default: Option<&'static str>,
    /// Where it may come from, in the order looked at.
    pub sources: &'static [Source],
    /// Its doc comment.
    pub doc: &'static str,
}

impl Parameter {
    /// The doc comment as one paragraph.
    pub fn description(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Declares `pub const PARAMETERS: &[Parameter]` of a scaler module:
///
/// ```ignore
/// parameters! {
///     /// The key whose length is read.
///     "listName": Text, required, [Metadata];
///     /// The length per replica the HPA aims for.
///     "listLength": Integer = "5", optional, [Metadata];
/// }
/// ```
///
/// Kinds are [`Kind`]'s variants, sources [`Source`]'s.
#[macro_export]
macro_rules! parameters {
    ($( $(#[doc = $doc:literal])+ $name:literal : $kind:ident $(= $default:literal)?,
        $required:ident, [$($source:ident),* $(,)?]; )*) => {
        /// The parameters of this trigger type, for the generated schema.
        pub const PARAMETERS: &[$crate::scalers::schema::Parameter] = &[$(
            $crate::scalers::schema::Parameter {
                name: $name,
                kind: $crate::scalers::schema::Kind::$kind,
                required: $crate::parameters!(@required $required),
                default: $crate::parameters!(@default $($default)?),
                sources: &[$($crate::params::Source::$source),*],
                doc: concat!($($doc, "\n"),+),
            },
        )*];
    };
    (@required required) => { true };
    (@required optional) => { false };
    (@default) => { None };
    (@default $default:literal) => { Some($default) };
}

fn source_label(source: Source) -> &'static str {
    match source {
        Source::Metadata => "metadata",
        Source::Auth => "TriggerAuthentication",
        Source::Env => "environment",
    }
}

/// The JSON Schema of a trigger's `metadata`, per trigger type.
///
/// Every value is a string. A parameter is `required` here only when it can come from
/// nothing but the metadata; one that may come from a TriggerAuthentication or the
/// environment (`<name>FromEnv`) is listed with its sources in `x-keda-sources`.
pub fn json_schema() -> Value {
    let mut definitions = Map::new();
    for (trigger_type, parameters) in super::all_parameters() {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for parameter in parameters {
            let mut property = json!({
                "type": "string",
                "description": parameter.description(),
                "x-keda-kind": parameter.kind.label(),
                "x-keda-sources": parameter.sources.iter().map(|s| source_label(*s)).collect::<Vec<_>>(),
            });
            if let Some(default) = parameter.default {
                property["default"] = json!(default);
            }
            if let Some(pattern) = parameter.kind.pattern() {
                property["pattern"] = json!(pattern);
            }
            if parameter.sources.contains(&Source::Env) {
                properties.insert(
                    format!("{}FromEnv", parameter.name),
                    json!({
                        "type": "string",
                        "description": format!(
                            "The target container's environment variable that holds `{}`.",
                            parameter.name
                        ),
                    }),
                );
            }
            if parameter.required && parameter.sources == [Source::Metadata] {
                required.push(parameter.name);
            }
            properties.insert(parameter.name.to_owned(), property);
        }
        definitions.insert(
            trigger_type.to_owned(),
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": { "type": "string" },
            }),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "keda-rs trigger metadata",
        "description": "The `metadata` of each trigger type of a ScaledObject or ScaledJob, generated from the scalers' parameter declarations.",
        "$defs": definitions,
    })
}

/// The parameter reference in Markdown, one table per trigger type.
pub fn markdown() -> String {
    let mut text = String::from(
        "# Trigger parameters\n\n\
         Generated from the scalers' parameter declarations (`operator/src/scalers/`); \
         `cargo test -p keda-operator --test schema` checks it is current and \
         `KEDA_RS_REGENERATE=1` rewrites it. The same facts as JSON Schema: \
         [`scaler-parameters.schema.json`](scaler-parameters.schema.json).\n\n\
         Sources are looked at in the order given: the trigger's `metadata`, a \
         TriggerAuthentication's parameters, and the target container's environment \
         (the variable named by `<name>FromEnv`).\n",
    );
    for (trigger_type, parameters) in super::all_parameters() {
        let _ = write!(
            text,
            "\n## `{trigger_type}`\n\n| Parameter | Kind | Required | Default | Sources | Description |\n|---|---|---|---|---|---|\n"
        );
        for parameter in parameters {
            let sources: Vec<_> = parameter.sources.iter().map(|s| source_label(*s)).collect();
            let _ = writeln!(
                text,
                "| `{}` | {} | {} | {} | {} | {} |",
                parameter.name,
                parameter.kind.label(),
                if parameter.required { "yes" } else { "no" },
                parameter
                    .default
                    .map_or_else(String::new, |d| format!("`{d}`")),
                sources.join(", "),
                parameter.description().replace('|', "\\|"),
            );
        }
    }
    text
}
