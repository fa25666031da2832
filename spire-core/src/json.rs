//! The JSON config files every component reads (diffusers/transformers `config.json`,
//! `scheduler_config.json`, `spire.json`): one object with the file it came from, and typed,
//! range-checked field readers whose errors name the file and the field. Shared by the models,
//! the scheduler and the metrics, so none of them depends on another for it.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The largest count any config field may hold (channels, layers, heads, vocabulary size,
/// positions, timesteps, …): 2²⁰. Real checkpoints stay far below it (SD's largest is the
/// 49 408-token vocabulary); a larger value is refused before anything is sized from it.
pub const MAX_CONFIG_COUNT: usize = 1 << 20;

/// A JSON object with the file it came from, for messages.
pub(crate) struct Json<'a> {
    pub(crate) path: &'a Path,
    pub(crate) map: Map<String, Value>,
}

impl<'a> Json<'a> {
    pub(crate) fn read(path: &'a Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        Self::parse(path, &text)
    }

    pub(crate) fn parse(path: &'a Path, text: &str) -> Result<Self> {
        let v: Value =
            crate::io::parse_json(text).map_err(|e| Error::model_load(path, format!("invalid JSON: {e}")))?;
        match v {
            Value::Object(map) => Ok(Self { path, map }),
            _ => Err(Error::model_load(path, "expected a JSON object")),
        }
    }

    pub(crate) fn from_value(path: &'a Path, v: &Value) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Self {
                path,
                map: map.clone(),
            }),
            _ => Err(Error::model_load(path, "expected a JSON object")),
        }
    }

    pub(crate) fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::model_load(self.path, format!("config field `{field}`: {msg}"))
    }

    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A count: a non-negative integer up to [`MAX_CONFIG_COUNT`].
    fn count(&self, field: &str, v: &Value) -> Result<usize> {
        match v.as_u64() {
            Some(x) if x <= MAX_CONFIG_COUNT as u64 => Ok(x as usize),
            Some(x) => Err(self.err(field, format!("{x} is out of range (at most {MAX_CONFIG_COUNT})"))),
            None => Err(self.err(field, format!("expected a non-negative integer, found {v}"))),
        }
    }

    pub(crate) fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => self.count(field, v),
        }
    }

    /// A finite number (NaN and infinities are refused: nothing the models read may be one).
    pub(crate) fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => match crate::io::json_f64(v) {
                Some(x) if x.is_finite() => Ok(x),
                Some(x) => Err(self.err(field, format!("{x} is not finite (a finite number is needed)"))),
                None => Err(self.err(field, format!("expected a finite number, found {v}"))),
            },
        }
    }

    /// [`Json::f64_or`] that must also satisfy `ok`, described by `range` in the error.
    pub(crate) fn f64_in(
        &self,
        field: &str,
        default: f64,
        range: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let x = self.f64_or(field, default)?;
        if ok(x) {
            Ok(x)
        } else {
            Err(self.err(field, format!("{x} is out of range ({range})")))
        }
    }

    /// A positive epsilon (added to a variance before its square root).
    pub(crate) fn eps_or(&self, field: &str, default: f64) -> Result<f64> {
        self.f64_in(field, default, "must be > 0 and finite", |x| x > 0.0)
    }

    /// A latent scaling factor: finite and non-zero (latents are divided by it).
    pub(crate) fn scaling_factor_or(&self, default: f64) -> Result<f64> {
        self.f64_in(
            "scaling_factor",
            default,
            "must be finite and non-zero, |x| ≥ 1e-6",
            |x| x.abs() >= 1e-6 && x.abs() <= 1e6,
        )
    }

    /// GroupNorm groups: at least 1, dividing every width in `channels`.
    pub(crate) fn groups_dividing(&self, channels: &[usize]) -> Result<usize> {
        let groups = self.usize_or("norm_num_groups", 32)?;
        if groups == 0 {
            return Err(self.err("norm_num_groups", "must be at least 1"));
        }
        for &c in channels {
            if c == 0 || c % groups != 0 {
                return Err(self.err(
                    "block_out_channels",
                    format!("{c} is not a multiple of norm_num_groups {groups}"),
                ));
            }
        }
        Ok(groups)
    }

    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn str_or<'s>(&'s self, field: &str, default: &'s str) -> Result<&'s str> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }

    pub(crate) fn strings(&self, field: &str) -> Result<Vec<String>> {
        match self.get(field) {
            None => Err(self.err(field, "missing")),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.err(field, format!("expected strings, found {v}")))
                })
                .collect(),
            Some(v) => Err(self.err(field, format!("expected a list of strings, found {v}"))),
        }
    }

    pub(crate) fn usizes(&self, field: &str) -> Result<Vec<usize>> {
        match self.get(field) {
            None => Err(self.err(field, "missing")),
            Some(Value::Array(a)) => a.iter().map(|v| self.count(field, v)).collect(),
            Some(v) => Err(self.err(field, format!("expected a list of integers, found {v}"))),
        }
    }

    /// An `int | list[int]` field expanded to one value per block.
    pub(crate) fn per_block(&self, field: &str, default: usize, n: usize) -> Result<Vec<usize>> {
        match self.get(field) {
            None => Ok(vec![default; n]),
            Some(Value::Array(_)) => {
                let v = self.usizes(field)?;
                if v.len() != n {
                    return Err(self.err(
                        field,
                        format!("has {} entries, the model has {n} blocks", v.len()),
                    ));
                }
                Ok(v)
            }
            Some(_) => Ok(vec![self.usize_or(field, default)?; n]),
        }
    }

    /// Fails unless `field` is absent, null, or equal to `default`.
    pub(crate) fn require_default(&self, field: &str, default: Value) -> Result<()> {
        match self.get(field) {
            None => Ok(()),
            Some(v) if *v == default => Ok(()),
            Some(v) if v.is_array() && v.as_array().is_some_and(|a| a.iter().all(|x| *x == default)) => {
                Ok(())
            }
            Some(v) => Err(self.err(field, format!("value {v} is not supported (only {default})"))),
        }
    }
}
