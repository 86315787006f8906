//! What the core needs to know of the functions a worker registers.

use std::time::Duration;

use serde_json::{Map, Value};

/// How long a failed attempt waits before the next one: exponential, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The wait after the first failed attempt, in milliseconds.
    pub initial_ms: u64,
    /// Each further failure multiplies the wait by this.
    pub factor: u32,
    /// The wait never exceeds this, in milliseconds.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

impl Backoff {
    /// 100 ms after the first failure, doubling, at most a minute.
    pub const DEFAULT: Backoff = Backoff {
        initial_ms: 100,
        factor: 2,
        max_ms: 60_000,
    };

    /// A constant wait of `ms` milliseconds between attempts.
    pub fn fixed(ms: u64) -> Self {
        Backoff {
            initial_ms: ms,
            factor: 1,
            max_ms: ms,
        }
    }

    /// The wait after attempt number `failed` (1-based) failed.
    pub fn delay(&self, failed: u32) -> Duration {
        let exponent = failed.saturating_sub(1);
        let mut ms = self.initial_ms;
        for _ in 0..exponent {
            ms = ms.saturating_mul(u64::from(self.factor));
            if ms >= self.max_ms {
                break;
            }
        }
        Duration::from_millis(ms.min(self.max_ms))
    }
}

/// A registered function's defaults, which a node's own options override.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobDefaults {
    /// Attempts after the first.
    pub retries: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// How long one attempt may run, in milliseconds; `None` for no limit.
    pub timeout_ms: Option<u64>,
    /// The queue the function's jobs go to; `None` for the default queue.
    pub queue: Option<String>,
}

/// The functions known where a project is checked or compiled.
///
/// A worker's registry implements this; so does the reference library of the
/// `testing` feature. Without a catalog, functions are not checked and take
/// [`JobDefaults::default`].
pub trait Catalog {
    /// The defaults of the function registered as `func`, or `None` when no
    /// function has that name.
    fn defaults(&self, func: &str) -> Option<&JobDefaults>;

    /// Checks that `args` and `kwargs` fit the parameters of `func` (SPEC 3).
    /// `Err` carries the reason, such as the serde message.
    fn check_input(
        &self,
        func: &str,
        args: Option<&Value>,
        kwargs: Option<&Map<String, Value>>,
    ) -> Result<(), String>;
}

impl<C: Catalog + ?Sized> Catalog for &C {
    fn defaults(&self, func: &str) -> Option<&JobDefaults> {
        (**self).defaults(func)
    }

    fn check_input(
        &self,
        func: &str,
        args: Option<&Value>,
        kwargs: Option<&Map<String, Value>>,
    ) -> Result<(), String> {
        (**self).check_input(func, args, kwargs)
    }
}

/// Maps an input onto a function's parameters, named `params` in order
/// (SPEC 3), giving one JSON value per parameter; a parameter that nothing
/// names gets `null`, so an `Option` parameter may be left out.
///
/// With one parameter the whole input is that parameter. With several, `args`
/// is an array of positional values or an object keyed by parameter name, and
/// `kwargs` may name parameters beside it.
pub fn bind_input(
    params: &[&str],
    args: Option<Value>,
    kwargs: Option<Map<String, Value>>,
) -> Result<Vec<Value>, String> {
    let mut slots: Vec<Option<Value>> = vec![None; params.len()];
    match (params.len(), args) {
        (0, Some(value)) if !value.is_null() => {
            return Err(format!(
                "the function takes no parameters, but was given {}",
                describe(&value)
            ));
        }
        (0, _) | (_, None) => {}
        (1, Some(value)) => slots[0] = Some(value),
        (n, Some(Value::Array(items))) => {
            if items.len() > n {
                return Err(format!(
                    "the function takes {n} parameters ({}), but args has {} elements",
                    params.join(", "),
                    items.len()
                ));
            }
            for (slot, item) in slots.iter_mut().zip(items) {
                *slot = Some(item);
            }
        }
        (_, Some(Value::Object(named))) => put_named(params, &mut slots, named, "args")?,
        (n, Some(other)) => {
            return Err(format!(
                "the function takes {n} parameters ({}): args must be an array or an object keyed by parameter name, not {}",
                params.join(", "),
                describe(&other)
            ));
        }
    }
    if let Some(named) = kwargs {
        put_named(params, &mut slots, named, "kwargs")?;
    }
    Ok(slots
        .into_iter()
        .map(|slot| slot.unwrap_or(Value::Null))
        .collect())
}

fn put_named(
    params: &[&str],
    slots: &mut [Option<Value>],
    named: Map<String, Value>,
    source: &str,
) -> Result<(), String> {
    for (name, value) in named {
        let Some(index) = params.iter().position(|p| *p == name) else {
            return Err(if params.is_empty() {
                format!("{source} names `{name}`, but the function takes no parameters")
            } else {
                format!(
                    "{source} names `{name}`, which is not a parameter (parameters: {})",
                    params.join(", ")
                )
            });
        };
        if slots[index].is_some() {
            return Err(format!("parameter `{name}` is given twice"));
        }
        slots[index] = Some(value);
    }
    Ok(())
}

/// A short name of a JSON value's type, for error messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kw(value: Value) -> Option<Map<String, Value>> {
        value.as_object().cloned()
    }

    #[test]
    fn one_parameter_takes_the_whole_input() {
        assert_eq!(
            bind_input(&["x"], Some(json!([1, 2])), None),
            Ok(vec![json!([1, 2])])
        );
        assert_eq!(bind_input(&["x"], None, None), Ok(vec![Value::Null]));
        assert_eq!(
            bind_input(&["x"], None, kw(json!({"x": 3}))),
            Ok(vec![json!(3)])
        );
    }

    #[test]
    fn several_parameters_by_position_name_or_kwargs() {
        let params = ["depth", "fanout"];
        assert_eq!(
            bind_input(&params, Some(json!([1, 3])), None),
            Ok(vec![json!(1), json!(3)])
        );
        assert_eq!(
            bind_input(&params, Some(json!({"fanout": 3, "depth": 1})), None),
            Ok(vec![json!(1), json!(3)])
        );
        assert_eq!(
            bind_input(&params, Some(json!([1])), kw(json!({"fanout": 3}))),
            Ok(vec![json!(1), json!(3)])
        );
        assert_eq!(
            bind_input(&params, None, kw(json!({"depth": 1}))),
            Ok(vec![json!(1), Value::Null])
        );
    }

    #[test]
    fn mistakes_are_named() {
        let params = ["depth", "fanout"];
        let err = bind_input(&params, Some(json!([1, 2, 3])), None).unwrap_err();
        assert!(err.contains("3 elements"), "{err}");
        let err = bind_input(&params, Some(json!([1])), kw(json!({"depth": 2}))).unwrap_err();
        assert!(err.contains("`depth` is given twice"), "{err}");
        let err = bind_input(&params, None, kw(json!({"width": 2}))).unwrap_err();
        assert!(err.contains("`width`"), "{err}");
        let err = bind_input(&params, Some(json!(5)), None).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        let err = bind_input(&[], Some(json!(5)), None).unwrap_err();
        assert!(err.contains("no parameters"), "{err}");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial_ms: 100,
            factor: 2,
            max_ms: 350,
        };
        let ms: Vec<u128> = (1..=5).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 350, 350, 350]);
        assert_eq!(Backoff::fixed(7).delay(40).as_millis(), 7);
        let huge = Backoff {
            initial_ms: u64::MAX / 2,
            factor: 10,
            max_ms: u64::MAX,
        };
        assert_eq!(huge.delay(1000), Duration::from_millis(u64::MAX));
    }
}
