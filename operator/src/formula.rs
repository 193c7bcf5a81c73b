//! scalingModifiers formulas: `advanced.scalingModifiers.formula` combines the metric values of
//! a `ScaledObject`'s named triggers into one composite metric.
//!
//! KEDA writes these formulas in expr-lang. Here a formula is translated once, token by token
//! into a Common Expression Language (CEL) program, and evaluated by the `cel` crate on every
//! polling cycle. The translation only respells syntax; every value is computed by CEL.
//!
//! # Values
//!
//! Every variable is a trigger's metric value, a float; it is `nil` while its trigger fails
//! past the fallback threshold. Every number is a float in the translated program, so integer
//! literals and variables mix freely and `/` is always float division (`7 / 2` is `3.5`).
//!
//! # Supported subset of expr-lang
//!
//! - numbers: `2`, `2.5`, `.5`, `1e3`, `1_000`, `0x1F`, `0o17`, `0b101`; `true`, `false`, `nil`;
//!   array literals `[a, b]`; `//` and `/* */` comments;
//! - arithmetic `+ - * /`, unary `-` and `+`, `%` (remainder truncated toward zero, like Go's;
//!   expr-lang only accepts integers there, this also accepts fractions), `**` and `^` (power);
//! - comparisons `== != < > <= >=`, `in` and `not in` over arrays;
//! - logic `&& || !` and `and or not`;
//! - the conditional `c ? a : b` (nested to the right as in expr-lang);
//! - nil-coalescing `a ?? b`, binding tighter than every other binary operator as in expr-lang
//!   (`a ?? 0 + b` is `(a ?? 0) + b`), while a unary operator applies to the whole coalescing
//!   (`-a ?? 0` is `-(a ?? 0)`). Both sides are evaluated, so `b` must not fail even when `a` is
//!   set;
//! - functions `float`, `int` (truncates toward zero), `abs`, `ceil`, `floor`, `round` (half
//!   away from zero), `max` and `min` (any number of numbers or arrays), `len`, `sum`;
//! - predicates over arrays, with a `{...}` closure or a bare one, `#` naming the element:
//!   `count`, `all`, `any`, `none`, `one`, `filter`, `map`, `sum`, e.g. `count([a, b], {# > 1})`.
//!
//! Not supported, each refused with [`FormulaError::Unsupported`]: strings, `let`, maps,
//! member access and indexing (`x.y`, `x[0]`, `?.`), ranges (`1..3`), pipes (`|`), the
//! shorthand conditional `?:`, string operators (`matches`, `contains`, `startsWith`,
//! `endsWith`) and every other expr-lang builtin.
//!
//! Limits: parentheses and operators nest at most 64 levels in the source, and the translated
//! expression tree is at most 32 levels deep (a sum of 32 terms is 32 levels), which keeps
//! parsing and evaluation within a small thread stack.
//!
//! # Result
//!
//! The formula must yield a number. As in KEDA, a formula containing `??` may also yield `nil`
//! ([`Formula::evaluate`] returns `None`; the caller falls back); any other formula yielding
//! `nil` is an error. [`Formula::compile`] validates like KEDA's admission webhook: it compiles
//! the formula and runs it with every variable at `-1`. A name that is no variable is refused
//! at compile time (KEDA's webhook does the same).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use cel::extractors::Arguments;
use cel::{Context, Env, ExecutionError, Program, Value};

/// Why a formula was refused or could not be evaluated. Messages quote the formula and name
/// the part that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormulaError {
    #[error("the scalingModifiers formula is empty")]
    Empty,
    #[error("formula `{formula}`: {message} at column {column}")]
    Syntax {
        formula: String,
        column: usize,
        message: String,
    },
    #[error(
        "formula `{formula}`: unknown variable \"{name}\" at column {column}; the formula can use the names of the triggers (cpu and memory excluded): [{known}]"
    )]
    UnknownVariable {
        formula: String,
        name: String,
        column: usize,
        known: String,
    },
    #[error("formula `{formula}`: {feature} is not supported (column {column})")]
    Unsupported {
        formula: String,
        feature: String,
        column: usize,
    },
    #[error("formula `{formula}`: {message}")]
    Evaluation { formula: String, message: String },
    #[error(
        "formula `{formula}` returned nil; only a formula using `??` may return nil{nil_variables}"
    )]
    Nil {
        formula: String,
        /// `"; nil variables: a, b"` or empty.
        nil_variables: String,
    },
    #[error("formula `{formula}` returned {kind}, not a number")]
    NotANumber { formula: String, kind: String },
}

/// A compiled formula; compile it once per `ScaledObject` generation and evaluate it every cycle.
#[derive(Clone)]
pub struct Formula {
    source: String,
    cel_source: String,
    variables: Vec<String>,
    nil_allowed: bool,
    env: Arc<Env>,
    program: Arc<Program>,
}

impl fmt::Debug for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Formula")
            .field("source", &self.source)
            .field("cel_source", &self.cel_source)
            .field("variables", &self.variables)
            .finish_non_exhaustive()
    }
}

impl Formula {
    /// Translates and compiles `formula` over `variables` (the trigger names), then validates it
    /// like KEDA's webhook: it must run with every variable at `-1` and yield a number (or nil
    /// when it uses `??`).
    pub fn compile(formula: &str, variables: &[String]) -> Result<Formula, FormulaError> {
        let source = formula.trim();
        if source.is_empty() {
            return Err(FormulaError::Empty);
        }
        let mut unique: Vec<String> = Vec::with_capacity(variables.len());
        for name in variables {
            if !unique.contains(name) {
                unique.push(name.clone());
            }
        }
        let translated = translate(source, &unique)?;
        let env = Arc::new(Env::stdlib());
        let program =
            parse_cel(&env, &translated.cel).map_err(|message| FormulaError::Evaluation {
                formula: source.to_owned(),
                message,
            })?;
        let compiled = Formula {
            source: source.to_owned(),
            cel_source: translated.cel,
            variables: unique,
            nil_allowed: translated.coalesces,
            env,
            program: Arc::new(program),
        };
        let dummy: BTreeMap<String, Option<f64>> = compiled
            .variables
            .iter()
            .map(|name| (name.clone(), Some(-1.0)))
            .collect();
        compiled.evaluate(&dummy)?;
        Ok(compiled)
    }

    /// The formula as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the formula was compiled over, without duplicates.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Evaluates the formula. A variable missing from `values` or mapped to `None` is `nil`.
    /// `Ok(None)`: the formula (one using `??`) returned nil.
    pub fn evaluate(
        &self,
        values: &BTreeMap<String, Option<f64>>,
    ) -> Result<Option<f64>, FormulaError> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        register_functions(&mut context).map_err(|e| self.evaluation(&e.to_string()))?;
        let mut nil_variables = Vec::new();
        for (index, name) in self.variables.iter().enumerate() {
            let value = values.get(name).copied().flatten().map_or_else(
                || {
                    nil_variables.push(name.as_str());
                    Value::Null
                },
                Value::Float,
            );
            context.add_variable_from_value(variable_ident(index), value);
        }
        let nil_note = if nil_variables.is_empty() {
            String::new()
        } else {
            format!("; nil variables: {}", nil_variables.join(", "))
        };
        let result = self
            .program
            .execute(&context)
            .map_err(|e| self.evaluation(&format!("{}{nil_note}", describe(&e))))?;
        match result {
            Value::Float(v) => Ok(Some(v)),
            #[allow(
                clippy::cast_precision_loss,
                reason = "expr-lang converts the result with float64(), losing the same precision"
            )]
            Value::Int(v) => Ok(Some(v as f64)),
            #[allow(
                clippy::cast_precision_loss,
                reason = "expr-lang converts the result with float64(), losing the same precision"
            )]
            Value::UInt(v) => Ok(Some(v as f64)),
            Value::Null if self.nil_allowed => Ok(None),
            Value::Null => Err(FormulaError::Nil {
                formula: self.source.clone(),
                nil_variables: nil_note,
            }),
            other => Err(FormulaError::NotANumber {
                formula: self.source.clone(),
                kind: kind_of(&other).to_owned(),
            }),
        }
    }

    fn evaluation(&self, message: &str) -> FormulaError {
        FormulaError::Evaluation {
            formula: self.source.clone(),
            message: message.to_owned(),
        }
    }
}

/// Stack of the thread that parses the CEL program. The CEL parser recurses deeply for every
/// level of parentheses and calls (over 100 KiB per level in unoptimized builds); the tree depth
/// limit bounds the levels, this bounds the stack they get.
const PARSER_STACK: usize = 16 << 20;

/// Parses `cel` on a thread of its own with a large stack, so that nesting within the limits
/// never overflows the caller's stack; a panic of the parser becomes an error.
fn parse_cel(env: &Arc<Env>, cel: &str) -> Result<Program, String> {
    let (env, cel) = (Arc::clone(env), cel.to_owned());
    std::thread::Builder::new()
        .name("formula-parser".to_owned())
        .stack_size(PARSER_STACK)
        .spawn(move || env.compile(&cel).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot start the formula parser: {e}"))?
        .join()
        .map_err(|_| "the formula parser failed".to_owned())?
        .map_err(|e| format!("the translated expression does not parse: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Runtime functions the translation calls. Each takes CEL values and reports misuse by name.

const FN_PREFIX: &str = "keda_";

fn register_functions(context: &mut Context<'_, '_>) -> Result<(), cel::DeclarationError> {
    context.add_function("keda_coalesce", coalesce)?;
    context.add_function("keda_float", |v: Value| unary("float", &v, |x| x))?;
    context.add_function("keda_int", |v: Value| unary("int", &v, f64::trunc))?;
    context.add_function("keda_abs", |v: Value| unary("abs", &v, f64::abs))?;
    context.add_function("keda_ceil", |v: Value| unary("ceil", &v, f64::ceil))?;
    context.add_function("keda_floor", |v: Value| unary("floor", &v, f64::floor))?;
    context.add_function("keda_round", |v: Value| unary("round", &v, f64::round))?;
    context.add_function("keda_mod", |a: Value, b: Value| modulo(&a, &b))?;
    context.add_function("keda_pow", |a: Value, b: Value| power(&a, &b))?;
    context.add_function("keda_max", |Arguments(args): Arguments| {
        extreme("max", &args, |a, b| b > a)
    })?;
    context.add_function("keda_min", |Arguments(args): Arguments| {
        extreme("min", &args, |a, b| b < a)
    })?;
    context.add_function("keda_sum", sum)?;
    Ok(())
}

fn coalesce(value: Value, default: Value) -> Value {
    if matches!(value, Value::Null) {
        default
    } else {
        value
    }
}

/// A number argument of `function`, or an error naming the function and what it got.
fn number(function: &str, value: &Value) -> Result<f64, ExecutionError> {
    match value {
        Value::Float(v) => Ok(*v),
        #[allow(
            clippy::cast_precision_loss,
            reason = "counts and sizes are far below 2^53"
        )]
        Value::Int(v) => Ok(*v as f64),
        #[allow(
            clippy::cast_precision_loss,
            reason = "counts and sizes are far below 2^53"
        )]
        Value::UInt(v) => Ok(*v as f64),
        other => Err(ExecutionError::function_error(
            function,
            format!("expects a number, got {}", kind_of(other)),
        )),
    }
}

fn unary(function: &str, value: &Value, f: fn(f64) -> f64) -> Result<Value, ExecutionError> {
    Ok(Value::Float(f(number(function, value)?)))
}

fn modulo(a: &Value, b: &Value) -> Result<Value, ExecutionError> {
    let (a, b) = (number("%", a)?, number("%", b)?);
    if b == 0.0 {
        return Err(ExecutionError::function_error("%", "remainder by zero"));
    }
    Ok(Value::Float(a % b))
}

fn power(a: &Value, b: &Value) -> Result<Value, ExecutionError> {
    Ok(Value::Float(number("**", a)?.powf(number("**", b)?)))
}

/// `max`/`min` over numbers and arrays of numbers, flattened.
fn extreme(
    function: &str,
    args: &[Value],
    replaces: fn(f64, f64) -> bool,
) -> Result<Value, ExecutionError> {
    let mut best: Option<f64> = None;
    let mut visit = |value: &Value| -> Result<(), ExecutionError> {
        let v = number(function, value)?;
        if best.is_none_or(|b| replaces(b, v)) {
            best = Some(v);
        }
        Ok(())
    };
    for arg in args {
        match arg {
            Value::List(items) => items.iter().try_for_each(&mut visit)?,
            other => visit(other)?,
        }
    }
    best.map(Value::Float)
        .ok_or_else(|| ExecutionError::function_error(function, "needs at least one number"))
}

fn sum(list: Value) -> Result<Value, ExecutionError> {
    match list {
        Value::List(items) => {
            let mut total = 0.0;
            for item in items.iter() {
                total += number("sum", item)?;
            }
            Ok(Value::Float(total))
        }
        other => Err(ExecutionError::function_error(
            "sum",
            format!("expects an array, got {}", kind_of(&other)),
        )),
    }
}

/// expr-lang's name for the type of a value.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "a bool",
        Value::Float(_) | Value::Int(_) | Value::UInt(_) => "a number",
        Value::List(_) => "an array",
        Value::Map(_) => "a map",
        Value::String(_) => "a string",
        _ => "a value of another type",
    }
}

/// expr-lang's name for the type of a value, without an article.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Float(_) | Value::Int(_) | Value::UInt(_) => "float",
        Value::List(_) => "array",
        Value::Map(_) => "map",
        Value::String(_) => "string",
        _ => "value",
    }
}

/// An execution error in expr-lang's terms: operator names instead of CEL's `_+_`, `nil` and
/// `float` instead of `null_type` and `double`, the formula's function names.
fn describe(error: &ExecutionError) -> String {
    match error {
        ExecutionError::NoSuchOverload(overload) => {
            let types: Vec<&str> = overload
                .argument_types()
                .iter()
                .map(|t| cel_type_name(t))
                .collect();
            let what = match operator_name(overload.function()) {
                Some(op) => format!("operator {op}"),
                None => format!("{}()", overload.function().trim_start_matches(FN_PREFIX)),
            };
            format!("{what} cannot be applied to ({})", types.join(", "))
        }
        ExecutionError::FunctionError { function, message } => {
            let function = function.trim_start_matches(FN_PREFIX);
            if operator_name(function).is_some() || function.chars().all(|c| !c.is_alphabetic()) {
                format!("operator {function}: {message}")
            } else {
                format!("{function}(): {message}")
            }
        }
        ExecutionError::UnsupportedBinaryOperator(op, lhs, rhs) => {
            let op = match *op {
                "add" => "+",
                "sub" => "-",
                "mul" => "*",
                "div" => "/",
                "rem" => "%",
                other => other,
            };
            format!(
                "operator {op} cannot be applied to ({}, {})",
                type_name(lhs),
                type_name(rhs)
            )
        }
        ExecutionError::UnexpectedType { got, want } => format!(
            "expected {}, got {}",
            cel_type_name(want),
            cel_type_name(got)
        ),
        ExecutionError::ValuesNotComparable(lhs, rhs) => {
            format!("cannot compare {} with {}", type_name(lhs), type_name(rhs))
        }
        other => other.to_string().replace(FN_PREFIX, ""),
    }
}

/// expr-lang's name for a CEL type name.
fn cel_type_name(name: &str) -> &str {
    match name {
        "null_type" => "nil",
        "double" | "int" | "uint" => "float",
        "list" => "array",
        other => other,
    }
}

fn operator_name(cel_function: &str) -> Option<&'static str> {
    Some(match cel_function {
        "_+_" => "+",
        "_-_" | "-_" => "-",
        "_*_" => "*",
        "_/_" => "/",
        "_%_" => "%",
        "_==_" => "==",
        "_!=_" => "!=",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        "_&&_" => "&&",
        "_||_" => "||",
        "!_" => "!",
        "_?_:_" => "?:",
        "@in" => "in",
        _ => return None,
    })
}

fn variable_ident(index: usize) -> String {
    format!("v{index}")
}

// ---------------------------------------------------------------------------------------------
// Translation: expr-lang tokens → CEL source.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Number(f64),
    Ident(String),
    /// An operator or punctuation, longest match.
    Op(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// 1-based column (in characters) of the token's first character.
    column: usize,
}

/// Longest first, so that `??` wins over `?`.
const OPERATORS: &[&str] = &[
    "??", "?.", "**", "==", "!=", "<=", ">=", "&&", "||", "..", "?", ":", "*", "/", "%", "+", "-",
    "^", "<", ">", "!", "(", ")", "[", "]", "{", "}", ",", ".", "|", "#",
];

struct Translated {
    cel: String,
    /// The formula uses `??`: a nil result is allowed.
    coalesces: bool,
}

fn translate(formula: &str, variables: &[String]) -> Result<Translated, FormulaError> {
    let tokens = tokenize(formula)?;
    let coalesces = tokens.iter().any(|t| t.tok == Tok::Op("??"));
    let mut parser = Parser {
        formula,
        tokens,
        pos: 0,
        variables,
        depth: 0,
        closures: 0,
    };
    let cel = parser.expression(0)?;
    let next = parser.peek().clone();
    if next.tok != Tok::End {
        return Err(parser.unexpected(&next));
    }
    if cel.depth > MAX_TREE_DEPTH {
        return Err(FormulaError::Syntax {
            formula: formula.to_owned(),
            column: 1,
            message: format!(
                "the formula nests too deeply: its expression tree is {} levels deep, at most {MAX_TREE_DEPTH} are allowed",
                cel.depth
            ),
        });
    }
    Ok(Translated {
        cel: cel.text,
        coalesces,
    })
}

fn tokenize(formula: &str) -> Result<Vec<Token>, FormulaError> {
    let chars: Vec<char> = formula.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let syntax = |column: usize, message: String| FormulaError::Syntax {
        formula: formula.to_owned(),
        column,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let end = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                .ok_or_else(|| syntax(column, "unterminated comment".to_owned()))?;
            i = end + 2;
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let start = i;
            i = scan_number(&chars, i);
            let text: String = chars[start..i].iter().collect();
            let value = parse_number(&text)
                .ok_or_else(|| syntax(column, format!("invalid number {text:?}")))?;
            tokens.push(Token {
                tok: Tok::Number(value),
                column,
            });
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "let" {
                return Err(FormulaError::Unsupported {
                    formula: formula.to_owned(),
                    feature: "\"let\"".to_owned(),
                    column,
                });
            }
            tokens.push(Token {
                tok: Tok::Ident(word),
                column,
            });
        } else if matches!(c, '"' | '\'' | '`') {
            return Err(FormulaError::Unsupported {
                formula: formula.to_owned(),
                feature: "a string literal".to_owned(),
                column,
            });
        } else {
            let op = OPERATORS
                .iter()
                .find(|op| {
                    op.chars()
                        .enumerate()
                        .all(|(k, oc)| chars.get(i + k) == Some(&oc))
                })
                .ok_or_else(|| syntax(column, format!("unexpected character {c:?}")))?;
            i += op.chars().count();
            tokens.push(Token {
                tok: Tok::Op(op),
                column,
            });
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// The end of the number starting at `start`: digits, `_`, letters of a radix prefix or an
/// exponent, a fraction (a `.` followed by a digit; `1..2` stays a range).
fn scan_number(chars: &[char], start: usize) -> usize {
    let mut i = start;
    let radix = chars.get(i) == Some(&'0')
        && chars
            .get(i + 1)
            .is_some_and(|c| matches!(c, 'x' | 'X' | 'o' | 'O' | 'b' | 'B'));
    if radix {
        i += 2;
        while i < chars.len() && (chars[i].is_ascii_hexdigit() || chars[i] == '_') {
            i += 1;
        }
        return i;
    }
    let digits = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_ascii_digit() || chars[*i] == '_') {
            *i += 1;
        }
    };
    digits(&mut i);
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
        i += 1;
        digits(&mut i);
    }
    if chars.get(i).is_some_and(|c| matches!(c, 'e' | 'E')) {
        let mut j = i + 1;
        if chars.get(j).is_some_and(|c| matches!(c, '+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            i = j;
            digits(&mut i);
        }
    }
    i
}

fn parse_number(text: &str) -> Option<f64> {
    let text = text.replace('_', "");
    let lower = text.to_ascii_lowercase();
    let value = if let Some(digits) = lower.strip_prefix("0x") {
        radix_value(digits, 16)?
    } else if let Some(digits) = lower.strip_prefix("0o") {
        radix_value(digits, 8)?
    } else if let Some(digits) = lower.strip_prefix("0b") {
        radix_value(digits, 2)?
    } else {
        text.parse::<f64>().ok()?
    };
    value.is_finite().then_some(value)
}

fn radix_value(digits: &str, radix: u32) -> Option<f64> {
    #[allow(
        clippy::cast_precision_loss,
        reason = "an integer literal becomes a float, as every number of a formula does"
    )]
    u64::from_str_radix(digits, radix).ok().map(|v| v as f64)
}

/// CEL precedence levels of an emitted expression, loosest first.
const TERNARY: u8 = 0;
const OR: u8 = 1;
const AND: u8 = 2;
const RELATION: u8 = 3;
const ADD: u8 = 4;
const MUL: u8 = 5;
const UNARY: u8 = 6;
const PRIMARY: u8 = 7;

/// Parentheses and operators nested deeper than this are refused by the parser.
const MAX_DEPTH: usize = 64;
/// The deepest expression tree handed to CEL. Its evaluator recurses once per level, with
/// large frames in unoptimized builds; 32 levels stay well inside a 2 MiB thread stack.
const MAX_TREE_DEPTH: usize = 32;

/// Emitted CEL text, its precedence level and the depth of its expression tree.
struct Cel {
    text: String,
    level: u8,
    depth: usize,
}

impl Cel {
    /// A leaf: a literal or an identifier.
    fn leaf(text: String) -> Self {
        Self {
            text,
            level: PRIMARY,
            depth: 1,
        }
    }

    /// A node over `children`; `extra` counts levels the node adds beyond one (comprehensions).
    fn node(text: String, level: u8, children: &[&Cel], extra: usize) -> Self {
        let depth = children.iter().map(|c| c.depth).max().unwrap_or(0) + 1 + extra;
        Self { text, level, depth }
    }

    fn call(text: String, children: &[&Cel]) -> Self {
        Self::node(text, PRIMARY, children, 0)
    }

    /// The text, parenthesized unless it binds at least as tightly as `level`.
    fn at(&self, level: u8) -> String {
        if self.level >= level {
            self.text.clone()
        } else {
            format!("({})", self.text)
        }
    }
}

/// What an expr-lang binary operator becomes.
#[derive(Clone, Copy)]
enum Emit {
    /// A CEL operator of the given level.
    Infix(&'static str, u8),
    /// A runtime function of two arguments.
    Call(&'static str),
    /// `not in`.
    NotIn,
}

struct Parser<'a> {
    formula: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    variables: &'a [String],
    depth: usize,
    /// Enclosing predicate closures; `#` is the innermost one's element.
    closures: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, offset: usize) -> &Tok {
        &self.tokens[(self.pos + offset).min(self.tokens.len() - 1)].tok
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn syntax(&self, column: usize, message: impl Into<String>) -> FormulaError {
        FormulaError::Syntax {
            formula: self.formula.to_owned(),
            column,
            message: message.into(),
        }
    }

    fn unsupported(&self, column: usize, feature: impl Into<String>) -> FormulaError {
        FormulaError::Unsupported {
            formula: self.formula.to_owned(),
            feature: feature.into(),
            column,
        }
    }

    fn unexpected(&self, token: &Token) -> FormulaError {
        match &token.tok {
            Tok::End => self.syntax(token.column, "unexpected end of formula"),
            Tok::Number(_) => self.syntax(token.column, "unexpected number"),
            Tok::Ident(name) => self.syntax(token.column, format!("unexpected name \"{name}\"")),
            Tok::Op(op) => self.syntax(token.column, format!("unexpected \"{op}\"")),
        }
    }

    fn expect(&mut self, op: &'static str) -> Result<(), FormulaError> {
        let token = self.advance();
        if token.tok == Tok::Op(op) {
            Ok(())
        } else if token.tok == Tok::End {
            Err(self.syntax(token.column, format!("expected \"{op}\" before the end")))
        } else {
            Err(self.syntax(token.column, format!("expected \"{op}\"")))
        }
    }

    /// The binary operator at the cursor: its expr-lang precedence, whether it is
    /// right-associative, how many tokens it spans, and what it becomes.
    fn binary_operator(&self) -> Result<Option<(u16, bool, usize, Emit)>, FormulaError> {
        let token = self.peek();
        let op = match &token.tok {
            Tok::Op(op) => *op,
            Tok::Ident(word) => match word.as_str() {
                "and" => "&&",
                "or" => "||",
                "in" => "in",
                "not" if *self.peek_at(1) == Tok::Ident("in".to_owned()) => {
                    return Ok(Some((20, false, 2, Emit::NotIn)));
                }
                "matches" | "contains" | "startsWith" | "endsWith" => {
                    return Err(
                        self.unsupported(token.column, format!("the string operator \"{word}\""))
                    );
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(match op {
            "||" => (10, false, 1, Emit::Infix("||", OR)),
            "&&" => (15, false, 1, Emit::Infix("&&", AND)),
            "==" | "!=" | "<" | ">" | "<=" | ">=" | "in" => {
                (20, false, 1, Emit::Infix(op, RELATION))
            }
            "+" | "-" => (30, false, 1, Emit::Infix(op, ADD)),
            "*" | "/" => (60, false, 1, Emit::Infix(op, MUL)),
            "%" => (60, false, 1, Emit::Call("keda_mod")),
            "**" | "^" => (100, true, 1, Emit::Call("keda_pow")),
            "??" => (500, false, 1, Emit::Call("keda_coalesce")),
            "|" => return Err(self.unsupported(token.column, "the pipe operator \"|\"")),
            ".." => return Err(self.unsupported(token.column, "the range operator \"..\"")),
            _ => return Ok(None),
        }))
    }

    /// expr-lang's `parseExpression(precedence)`: binary operators binding at least as tightly
    /// as `precedence`, then (at the top level of an expression) the conditional.
    fn expression(&mut self, precedence: u16) -> Result<Cel, FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let column = self.peek().column;
            return Err(self.syntax(column, "the formula nests too deeply"));
        }
        let mut left = self.unary()?;
        while let Some((prec, right_assoc, width, emit)) = self.binary_operator()? {
            if prec < precedence {
                break;
            }
            for _ in 0..width {
                self.advance();
            }
            let right = self.expression(if right_assoc { prec } else { prec + 1 })?;
            left = match emit {
                Emit::Infix(op, level) => Cel::node(
                    format!("{} {op} {}", left.at(level), right.at(level + 1)),
                    level,
                    &[&left, &right],
                    0,
                ),
                Emit::Call(function) => Cel::call(
                    format!("{function}({}, {})", left.text, right.text),
                    &[&left, &right],
                ),
                Emit::NotIn => Cel::node(
                    format!("!({} in {})", left.at(RELATION), right.at(RELATION + 1)),
                    UNARY,
                    &[&left, &right],
                    1,
                ),
            };
        }
        if precedence == 0 && self.peek().tok == Tok::Op("?") {
            left = self.conditional(&left)?;
        }
        self.depth -= 1;
        Ok(left)
    }

    fn conditional(&mut self, condition: &Cel) -> Result<Cel, FormulaError> {
        let question = self.advance();
        if self.peek().tok == Tok::Op(":") {
            return Err(self.unsupported(question.column, "the shorthand conditional \"?:\""));
        }
        let then = self.expression(0)?;
        self.expect(":")?;
        let otherwise = self.expression(0)?;
        Ok(Cel::node(
            format!(
                "{} ? {} : {}",
                condition.at(OR),
                then.at(OR),
                otherwise.at(TERNARY)
            ),
            TERNARY,
            &[condition, &then, &otherwise],
            0,
        ))
    }

    fn unary(&mut self) -> Result<Cel, FormulaError> {
        let token = self.peek().clone();
        let op = match &token.tok {
            Tok::Op(op @ ("!" | "-" | "+")) => Some(*op),
            Tok::Ident(word) if word == "not" => Some("!"),
            _ => None,
        };
        let Some(op) = op else {
            return self.postfix();
        };
        self.advance();
        let precedence = if op == "!" { 50 } else { 90 };
        let operand = self.expression(precedence)?;
        Ok(match op {
            "+" => operand,
            _ => Cel::node(
                format!("{op}{}", operand.at(PRIMARY)),
                UNARY,
                &[&operand],
                0,
            ),
        })
    }

    fn postfix(&mut self) -> Result<Cel, FormulaError> {
        let primary = self.primary()?;
        let token = self.peek();
        match token.tok {
            Tok::Op("." | "?.") => Err(self.unsupported(token.column, "member access (\"x.y\")")),
            Tok::Op("[") => Err(self.unsupported(token.column, "indexing (\"x[i]\")")),
            _ => Ok(primary),
        }
    }

    fn primary(&mut self) -> Result<Cel, FormulaError> {
        let token = self.advance();
        match &token.tok {
            Tok::Number(value) => Ok(Cel::leaf(format!("{value:?}"))),
            Tok::Op("(") => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Op("[") => {
                let items = self.list("]")?;
                let children: Vec<&Cel> = items.iter().collect();
                Ok(Cel::call(format!("[{}]", join(&items)), &children))
            }
            Tok::Op("#") => {
                if self.closures == 0 {
                    Err(self.syntax(token.column, "\"#\" outside a predicate"))
                } else {
                    let next = self.peek();
                    if matches!(next.tok, Tok::Ident(_)) && next.column == token.column + 1 {
                        return Err(self.unsupported(token.column, "named pointers (\"#name\")"));
                    }
                    Ok(Cel::leaf(format!("it{}", self.closures - 1)))
                }
            }
            Tok::Op("{") => Err(self.unsupported(token.column, "a map literal or a closure here")),
            Tok::Ident(name) => self.identifier(name, token.column),
            _ => Err(self.unexpected(&token)),
        }
    }

    /// Expressions separated by commas up to `close` (a trailing comma allowed).
    fn list(&mut self, close: &'static str) -> Result<Vec<Cel>, FormulaError> {
        let mut items = Vec::new();
        loop {
            if self.peek().tok == Tok::Op(close) {
                self.advance();
                return Ok(items);
            }
            items.push(self.expression(0)?);
            if self.peek().tok == Tok::Op(",") {
                self.advance();
            } else {
                self.expect(close)?;
                return Ok(items);
            }
        }
    }

    fn identifier(&mut self, name: &str, column: usize) -> Result<Cel, FormulaError> {
        if self.peek().tok == Tok::Op("(") {
            self.advance();
            return self.call(name, column);
        }
        match name {
            "true" | "false" => return Ok(Cel::leaf(name.to_owned())),
            "nil" => return Ok(Cel::leaf("null".to_owned())),
            _ => {}
        }
        if let Some(index) = self.variables.iter().position(|v| v == name) {
            return Ok(Cel::leaf(variable_ident(index)));
        }
        Err(FormulaError::UnknownVariable {
            formula: self.formula.to_owned(),
            name: name.to_owned(),
            column,
            known: self.variables.join(", "),
        })
    }

    /// A call of `name`, the cursor after its `(`.
    fn call(&mut self, name: &str, column: usize) -> Result<Cel, FormulaError> {
        const PREDICATES: &[&str] = &["all", "any", "none", "one", "filter", "map", "count"];
        if PREDICATES.contains(&name) || name == "sum" {
            return self.predicate_call(name, column);
        }
        let args = self.list(")")?;
        let single = |function: &str| -> Result<Cel, FormulaError> {
            match args.as_slice() {
                [arg] => Ok(Cel::call(format!("{function}({})", arg.text), &[arg])),
                _ => Err(self.syntax(
                    column,
                    format!("{name}() takes 1 argument, got {}", args.len()),
                )),
            }
        };
        match name {
            "float" => single("keda_float"),
            "int" => single("keda_int"),
            "abs" => single("keda_abs"),
            "ceil" => single("keda_ceil"),
            "floor" => single("keda_floor"),
            "round" => single("keda_round"),
            "len" => {
                single("size").map(|size| Cel::call(format!("double({})", size.text), &[&size]))
            }
            "max" | "min" if args.is_empty() => {
                Err(self.syntax(column, format!("{name}() takes at least 1 argument")))
            }
            "max" | "min" => {
                let children: Vec<&Cel> = args.iter().collect();
                Ok(Cel::call(
                    format!("keda_{name}({})", join(&args)),
                    &children,
                ))
            }
            _ => Err(self.unsupported(column, format!("the function \"{name}\""))),
        }
    }

    /// `name(array)` or `name(array, predicate)`; the predicate is `{...}` or a bare expression.
    fn predicate_call(&mut self, name: &str, column: usize) -> Result<Cel, FormulaError> {
        let array = self.expression(0)?;
        let predicate = if self.peek().tok == Tok::Op(",") {
            self.advance();
            self.closures += 1;
            let braced = self.peek().tok == Tok::Op("{");
            if braced {
                self.advance();
            }
            let body = self.expression(0);
            self.closures -= 1;
            let body = body?;
            if braced {
                self.expect("}")?;
            }
            if self.peek().tok == Tok::Op(",") {
                self.advance();
            }
            Some(body)
        } else {
            None
        };
        self.expect(")")?;
        let it = format!("it{}", self.closures);
        let target = array.at(PRIMARY);
        let comprehension = |cel_macro: &str, body: &Cel| {
            Cel::node(
                format!("{target}.{cel_macro}({it}, {})", body.text),
                PRIMARY,
                &[&array, body],
                2,
            )
        };
        let wrap =
            |format: fn(&str) -> String, inner: &Cel| Cel::call(format(&inner.text), &[inner]);
        Ok(match (name, predicate) {
            ("sum", None) => wrap(|t| format!("keda_sum({t})"), &array),
            ("sum", Some(body)) => wrap(|t| format!("keda_sum({t})"), &comprehension("map", &body)),
            ("count", body) => {
                let body = body.unwrap_or_else(|| Cel::leaf(it.clone()));
                let filtered = comprehension("filter", &body);
                let size = wrap(|t| format!("size({t})"), &filtered);
                wrap(|t| format!("double({t})"), &size)
            }
            (_, None) => {
                return Err(self.syntax(column, format!("{name}() needs a predicate")));
            }
            ("all", Some(body)) => comprehension("all", &body),
            ("any", Some(body)) => comprehension("exists", &body),
            ("none", Some(body)) => {
                let exists = comprehension("exists", &body);
                Cel::node(format!("!{}", exists.text), UNARY, &[&exists], 0)
            }
            ("one", Some(body)) => comprehension("exists_one", &body),
            ("filter", Some(body)) => comprehension("filter", &body),
            (_, Some(body)) => comprehension("map", &body),
        })
    }
}

fn join(items: &[Cel]) -> String {
    items
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "a test fails by panicking"
    )]

    use super::*;

    /// One formula, the values it is evaluated with, and the result or the error expected.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Case {
        formula: String,
        /// Trigger values; `~` is nil.
        #[serde(default)]
        values: BTreeMap<String, Option<f64>>,
        /// Variables to compile over; the names in `values` when absent.
        vars: Option<Vec<String>>,
        want: Option<f64>,
        /// The formula returns nil.
        #[serde(default)]
        want_nil: bool,
        /// A part of the error message (from compiling, or evaluating when it compiled).
        error: Option<String>,
    }

    /// KEDA's documented formulas and expr-lang semantics the translation must keep.
    const CASES: &str = r##"
# KEDA's documentation examples
- {formula: "(trig_one + trig_two)/2", values: {trig_one: 3, trig_two: 4}, want: 3.5}
- {formula: "trig_one > 2 ? trig_one + trig_two : 1", values: {trig_one: 3, trig_two: 4}, want: 7}
- {formula: "trig_one > 2 ? trig_one + trig_two : 1", values: {trig_one: 2, trig_two: 4}, want: 1}
- {formula: "trig_one ?? 5", values: {trig_one: ~}, want: 5}
- {formula: "trig_one ?? 5", values: {trig_one: 7.5}, want: 7.5}
- {formula: "trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", values: {trig_one: 1, trig_two: 1}, want: 5}
- {formula: "trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", values: {trig_one: 1, trig_two: 0.5}, want: 10}
- {formula: "trig_one < 2 ? trig_one + trig_two >= 2 ? 5 : 10 : 0", values: {trig_one: 3, trig_two: 0}, want: 0}
- {formula: "max(a, b) * 2", values: {a: 3, b: 8}, want: 16}
- {formula: "min(a, b, 1)", values: {a: 3, b: 8}, want: 1}
- {formula: "max([a, b], 5)", values: {a: 3, b: 8}, want: 8}
- {formula: "min(a)", values: {a: 3}, want: 3}
- {formula: "float(a)/3", values: {a: 7}, want: 2.3333333333333335}
- {formula: "float(a) + 1", values: {a: 2}, want: 3}

# `??` binds tighter than every other binary operator, looser than a unary operator's operand
- {formula: "a ?? 0 + b", values: {a: ~, b: 2}, want: 2}
- {formula: "a ?? 0 + b", values: {a: 1, b: 2}, want: 3}
- {formula: "a ?? 2 * b", values: {a: ~, b: 3}, want: 6}
- {formula: "a ?? b ?? 4", values: {a: ~, b: ~}, want: 4}
- {formula: "a ?? b ?? 4", values: {a: ~, b: 9}, want: 9}
- {formula: "-a ?? 1", values: {a: ~}, want: -1}
- {formula: "max(a ?? 0, b ?? 0)", values: {a: ~, b: 4}, want: 4}
- {formula: "a ?? nil", values: {a: ~}, want_nil: true}
- {formula: "a ?? b", values: {a: ~, b: ~}, want_nil: true}
- {formula: "a == nil ? 0 : a", values: {a: ~}, want: 0}
- {formula: "a != nil ? a : 0", values: {a: 3}, want: 3}

# nested conditionals nest to the right
- {formula: "a > 10 ? 3 : a > 5 ? 2 : 1", values: {a: 11}, want: 3}
- {formula: "a > 10 ? 3 : a > 5 ? 2 : 1", values: {a: 7}, want: 2}
- {formula: "a > 10 ? 3 : a > 5 ? 2 : 1", values: {a: 1}, want: 1}
- {formula: "(a > 1 ? a : 1) * 2", values: {a: 4}, want: 8}

# integers and floats mix; division is float division
- {formula: "7 / 2", want: 3.5}
- {formula: "a / 2", values: {a: 5}, want: 2.5}
- {formula: "1 / 3 * 3", want: 1}
- {formula: "a == 2 ? 1.5 : 0", values: {a: 2}, want: 1.5}
- {formula: "a > 2.5 ? 1 : 0", values: {a: 3}, want: 1}
- {formula: "a <= 2 ? 1 : 0", values: {a: 2.0}, want: 1}
- {formula: "1 / 0", want: .inf}
- {formula: "a + b * 2 - (a - b) / 2", values: {a: 4, b: 2}, want: 7}
- {formula: "a - b - 1", values: {a: 10, b: 3}, want: 6}
- {formula: "a / b / 2", values: {a: 8, b: 2}, want: 2}
- {formula: "a - (b - 1)", values: {a: 10, b: 3}, want: 8}
- {formula: "-a * 2", values: {a: 3}, want: -6}
- {formula: "--a", values: {a: 3}, want: 3}
- {formula: "+a - -2", values: {a: 3}, want: 5}
- {formula: "1_000 + 0x10 + 1e2 + .5 + 2.5e-1", want: 1116.75}
- {formula: "10 % 4", want: 2}
- {formula: "-7 % 3", want: -1}
- {formula: "int(a) % 3", values: {a: 10.7}, want: 1}
- {formula: "a % 4", values: {a: 10.5}, want: 2.5}
- {formula: "2 ** 10", want: 1024}
- {formula: "2 ^ 3 ^ 2", want: 512}
- {formula: "-2 ** 2", want: -4}

# functions
- {formula: "abs(a - b)", values: {a: 3, b: 8}, want: 5}
- {formula: "ceil(a / 4)", values: {a: 9}, want: 3}
- {formula: "floor(a / 4)", values: {a: 9}, want: 2}
- {formula: "round(2.5) + round(-2.5)", want: 0}
- {formula: "round(a)", values: {a: 2.4}, want: 2}
- {formula: "int(2.7) + int(-2.7)", want: 0}
- {formula: "int(a)", values: {a: 2.7}, want: 2}

# logic
- {formula: "a > 1 && b > 1 ? 1 : 0", values: {a: 2, b: 1}, want: 0}
- {formula: "a > 1 || b > 1 ? 1 : 0", values: {a: 2, b: 1}, want: 1}
- {formula: "a > 1 and b < 2 ? 1 : 0", values: {a: 2, b: 1}, want: 1}
- {formula: "a > 5 or not (b > 1) ? 1 : 0", values: {a: 2, b: 1}, want: 1}
- {formula: "!(a > 1) ? 1 : 0", values: {a: 2}, want: 0}
- {formula: "true ? a : 0", values: {a: 2}, want: 2}
- {formula: "a in [1, 2, 3] ? 1 : 0", values: {a: 2}, want: 1}
- {formula: "a not in [1, 2, 3] ? 1 : 0", values: {a: 2}, want: 0}

# predicates
- {formula: "count([a, b, c], {# > 1})", values: {a: 0.5, b: 2, c: 3}, want: 2}
- {formula: "count([a, b, c], # > 1) * 10", values: {a: 0.5, b: 2, c: 3}, want: 20}
- {formula: "count([a > 1, b > 1])", values: {a: 0.5, b: 2}, want: 1}
- {formula: "all([a, b], {# > 1}) ? 1 : 0", values: {a: 2, b: 3}, want: 1}
- {formula: "any([a, b], {# > 2}) ? 1 : 0", values: {a: 2, b: 3}, want: 1}
- {formula: "none([a, b], {# > 2}) ? 1 : 0", values: {a: 2, b: 3}, want: 0}
- {formula: "one([a, b], {# > 1}) ? 1 : 0", values: {a: 2, b: 3}, want: 0}
- {formula: "sum([a, b, c])", values: {a: 1, b: 2, c: 3.5}, want: 6.5}
- {formula: "sum([a, b], {# * 2})", values: {a: 1, b: 2}, want: 6}
- {formula: "sum(map([a, b], {# * 2}))", values: {a: 1, b: 2}, want: 6}
- {formula: "len(filter([a, b, c], {# > 1}))", values: {a: 0.5, b: 2, c: 3}, want: 2}
- {formula: "max(filter([a, b], {# < 3}))", values: {a: 2, b: 3}, want: 2}
- {formula: "count([a, b], {any([1, 2], {# == 2}) && # > 1})", values: {a: 1, b: 2}, want: 1}

# layout, comments, names
- {formula: " a /* queue */ + b // backlog", values: {a: 1, b: 2}, want: 3}
- {formula: "queue_length_1 + $rate", values: {queue_length_1: 1, $rate: 2}, want: 3}
- {formula: "max + 1", values: {max: 1}, want: 2}

# refused at compile time
- {formula: "", error: "formula is empty"}
- {formula: "a +", values: {a: 1}, error: "unexpected end of formula at column 4"}
- {formula: "(a + b", values: {a: 1, b: 2}, error: "expected \")\" before the end"}
- {formula: "a +* b", values: {a: 1, b: 2}, error: "unexpected \"*\" at column 4"}
- {formula: "a b", values: {a: 1, b: 2}, error: "unexpected name \"b\""}
- {formula: "a @ b", values: {a: 1, b: 2}, error: "unexpected character '@'"}
- {formula: "a + c", vars: [a, b], error: "unknown variable \"c\" at column 5; the formula can use the names of the triggers (cpu and memory excluded): [a, b]"}
- {formula: "trig_one + trig_three", values: {trig_one: 1, trig_two: 1}, error: "unknown variable \"trig_three\""}
- {formula: "a + 'x'", values: {a: 1}, error: "a string literal is not supported"}
- {formula: "let x = a; x", values: {a: 1}, error: "\"let\" is not supported"}
- {formula: "a.b", values: {a: 1}, error: "member access"}
- {formula: "[a][0]", values: {a: 1}, error: "indexing"}
- {formula: "foo(a)", values: {a: 1}, error: "the function \"foo\" is not supported"}
- {formula: "median([a])", values: {a: 1}, error: "the function \"median\" is not supported"}
- {formula: "a ?: 1", values: {a: 1}, error: "the shorthand conditional"}
- {formula: "1..3", error: "the range operator"}
- {formula: "a | b", values: {a: 1, b: 2}, error: "the pipe operator"}
- {formula: "# > 1", error: "\"#\" outside a predicate"}
- {formula: "max()", error: "max() takes at least 1 argument"}
- {formula: "abs(a, 1)", values: {a: 1}, error: "abs() takes 1 argument, got 2"}
- {formula: "count([a])", values: {a: 1}, error: "formula `count([a])`: expected bool, got float"}
- {formula: "not a == b ? 1 : 0", values: {a: 1, b: 1}, error: "operator ! cannot be applied to (float)"}
- {formula: "all([a])", values: {a: 1}, error: "all() needs a predicate"}
- {formula: "a > 1", values: {a: 1}, error: "returned a bool, not a number"}
- {formula: "[a]", values: {a: 1}, error: "returned an array, not a number"}
- {formula: "nil", error: "returned nil; only a formula using `??` may return nil"}
- {formula: "a % 0", values: {a: 1}, error: "operator %: remainder by zero"}
- {formula: "a > 1 ? 1", values: {a: 1}, error: "expected \":\" before the end"}

# fails when evaluated with these values
- {formula: "a + b", vars: [a, b], values: {a: 1, b: ~}, error: "formula `a + b`: operator + cannot be applied to (float, nil); nil variables: b"}
- {formula: "a", vars: [a], values: {}, error: "formula `a` returned nil; only a formula using `??` may return nil; nil variables: a"}
- {formula: "float(a)", values: {a: ~}, error: "float(): expects a number, got nil; nil variables: a"}
- {formula: "max(a, b)", values: {a: 1, b: ~}, error: "max(): expects a number, got nil"}
- {formula: "a > 1 ? 1 : 0", values: {a: ~}, error: "operator > cannot be applied to (nil, float)"}
"##;

    #[test]
    fn documented_formulas_evaluate_like_expr_lang() {
        let cases: Vec<Case> = serde_yaml::from_str(CASES).unwrap();
        assert!(cases.len() > 100, "{} cases", cases.len());
        let mut failures = Vec::new();
        for case in &cases {
            let vars = case
                .vars
                .clone()
                .unwrap_or_else(|| case.values.keys().cloned().collect());
            let result =
                Formula::compile(&case.formula, &vars).and_then(|f| f.evaluate(&case.values));
            let ok = match (&case.error, result.as_ref()) {
                (Some(part), Err(e)) => e.to_string().contains(part.as_str()),
                (Some(_), Ok(_)) | (None, Err(_)) => false,
                (None, Ok(None)) => case.want_nil,
                (None, Ok(Some(v))) => !case.want_nil && case.want == Some(*v),
            };
            if !ok {
                failures.push(format!("{case:?}\n    got {result:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failing:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn translation_keeps_expr_lang_precedence() {
        let vars = ["a", "b", "c"].map(String::from);
        let cel = |formula: &str| translate(formula, &vars).unwrap().cel;
        assert_eq!(cel("a ?? 0 + b"), "keda_coalesce(v0, 0.0) + v1");
        assert_eq!(cel("-a ?? 0"), "-keda_coalesce(v0, 0.0)");
        assert_eq!(cel("a - (b - c)"), "v0 - (v1 - v2)");
        assert_eq!(cel("a - b - c"), "v0 - v1 - v2");
        assert_eq!(cel("(a + b) * c"), "(v0 + v1) * v2");
        assert_eq!(
            cel("a > 1 ? b : c > 2 ? a : b"),
            "v0 > 1.0 ? v1 : v2 > 2.0 ? v0 : v1"
        );
        assert_eq!(
            cel("(a > 1 ? b : c) > 2 ? 1 : 0"),
            "(v0 > 1.0 ? v1 : v2) > 2.0 ? 1.0 : 0.0"
        );
        assert_eq!(cel("not a == b ? 1 : 0"), "!v0 == v1 ? 1.0 : 0.0");
        assert_eq!(
            cel("count([a, b], {# > 1})"),
            "double(size([v0, v1].filter(it0, it0 > 1.0)))"
        );
    }

    #[test]
    fn errors_carry_the_formula_and_never_panic() {
        let vars = ["a".to_owned()];
        for formula in [
            "(",
            ")",
            "?",
            ":",
            "a ? 1 :",
            "[",
            "[a,",
            "max(",
            "count(",
            "count([a], {",
            "{}",
            "#",
            "a ??",
            "0x",
            "1e",
            "/*",
            "a / * b",
            "\u{e9}t\u{e9}",
        ] {
            let error = Formula::compile(formula, &vars).unwrap_err();
            assert!(error.to_string().contains("formula"), "{formula}: {error}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_and_long_chains_work() {
        let vars = ["a".to_owned()];
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        let error = Formula::compile(&deep, &vars).unwrap_err();
        assert!(error.to_string().contains("nests too deeply"), "{error}");

        let chain = vec!["a"; MAX_TREE_DEPTH].join(" + ");
        let formula = Formula::compile(&chain, &vars).unwrap();
        let values = BTreeMap::from([("a".to_owned(), Some(0.5))]);
        assert_eq!(formula.evaluate(&values), Ok(Some(16.0)));

        let chain = vec!["a"; MAX_TREE_DEPTH + 1].join(" * ");
        let error = Formula::compile(&chain, &vars).unwrap_err();
        assert!(
            error.to_string().contains("33 levels deep, at most 32"),
            "{error}"
        );
    }

    #[test]
    fn the_deepest_formulas_allowed_fit_a_small_thread_stack() {
        let calls = format!(
            "{}a{}",
            "abs(".repeat(MAX_TREE_DEPTH - 1),
            ")".repeat(MAX_TREE_DEPTH - 1)
        );
        let parens = format!(
            "{}a{}",
            "1 - (".repeat(MAX_TREE_DEPTH / 2 - 1),
            ")".repeat(MAX_TREE_DEPTH / 2 - 1)
        );
        for formula in [calls, parens] {
            // Tokio's worker threads have 2 MiB stacks.
            let result = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let compiled = Formula::compile(&formula, &["a".to_owned()])?;
                    compiled.evaluate(&BTreeMap::from([("a".to_owned(), Some(-2.0))]))
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(matches!(result, Ok(Some(_))), "{result:?}");
        }
    }

    #[test]
    fn missing_values_are_nil_and_a_formula_is_reusable() {
        let vars = ["a".to_owned(), "b".to_owned()];
        let formula = Formula::compile("a ?? b ?? 0", &vars).unwrap();
        assert_eq!(formula.evaluate(&BTreeMap::new()), Ok(Some(0.0)));
        let values = BTreeMap::from([("b".to_owned(), Some(2.0))]);
        assert_eq!(formula.evaluate(&values), Ok(Some(2.0)));
        let values = BTreeMap::from([("a".to_owned(), Some(1.0)), ("b".to_owned(), Some(2.0))]);
        assert_eq!(formula.evaluate(&values), Ok(Some(1.0)));
        assert_eq!(formula.variables(), vars);
        assert_eq!(formula.source(), "a ?? b ?? 0");
    }

    #[test]
    fn formula_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert_send_sync::<Formula>();
    }
}
