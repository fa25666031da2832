//! `spire.Restorer`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use pyo3::types::PyDict;
use spire_core::options::OptionValue;
use spire_core::{
    LoadOptions, Progress, RestorationInput, RestorationPrompt, RestoreOptions, Restorer, Stage,
};

use crate::errors::{guard, new, to_py};
use crate::image::{from_numpy, to_numpy, Owned};
use crate::prompt::PyRestorationPrompt;

/// A loaded SPIRE model. Copies and threads share one set of weights.
#[pyclass(frozen, module = "spire._spire", name = "Restorer")]
pub(crate) struct PyRestorer {
    inner: Restorer,
    /// How it was loaded (kind, path, keyword arguments): a pickle carries this, not weights.
    source: Source,
}

/// A reference to what a restorer was loaded from.
#[derive(Clone)]
struct Source {
    kind: &'static str,
    path: Option<PathBuf>,
    kwargs: Vec<(&'static str, Option<String>)>,
}

/// Where the progress callback's exception is kept until the run returns.
type ErrSlot = Arc<Mutex<Option<PyErr>>>;

fn invalid(name: &str, msg: String) -> PyErr {
    new(
        "InvalidArgumentError",
        format!("invalid argument `{name}`: {msg}"),
    )
}

/// The restore options table of the core, one dict per option (`name`, `type`, `default`,
/// `doc`, `recommendable`): what `Restorer.restore` takes as keywords.
#[pyfunction]
pub(crate) fn restore_options(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    spire_core::options::OPTIONS
        .iter()
        .map(|o| {
            let d = PyDict::new(py);
            d.set_item("name", o.name)?;
            d.set_item("type", o.kind.describe())?;
            d.set_item("default", o.default)?;
            d.set_item("doc", o.doc)?;
            d.set_item("recommendable", o.recommendable)?;
            Ok(d)
        })
        .collect()
}

/// A Python value as an option value: bool, int (≥ 0; numpy integers too), float, str.
/// `None` means "not given" (the model's default stays).
fn option_value(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<OptionValue>> {
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(Some(OptionValue::Bool(b.is_true())));
    }
    if let Ok(x) = v.cast::<pyo3::types::PyFloat>() {
        return Ok(Some(OptionValue::Float(x.value())));
    }
    if let Ok(t) = v.extract::<String>() {
        return Ok(Some(OptionValue::Text(t)));
    }
    if let Ok(n) = v.extract::<i128>() {
        return u64::try_from(n)
            .map(|n| Some(OptionValue::Int(n)))
            .map_err(|_| invalid(name, format!("must be ≥ 0, got {n}")));
    }
    if let Ok(x) = v.extract::<f64>() {
        return Ok(Some(OptionValue::Float(x)));
    }
    Err(invalid(
        name,
        format!("must be a bool, a number or a str, got {}", v.get_type().name()?),
    ))
}

/// The options of a run: the model's defaults, then every keyword of `options` by its name in
/// the core's options table (`spire_core::options::OPTIONS`), then the arguments that are not
/// values (the restoration prompt may be a `RestorationPrompt`; initial latents; progress).
fn build_options(
    py: Python<'_>,
    base: RestoreOptions,
    restoration_prompt: Option<&Bound<'_, PyAny>>,
    initial_latents: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(RestoreOptions, ErrSlot)> {
    let mut o = base;
    if let Some(opts) = options {
        for (k, v) in opts.iter() {
            let name: String = k.extract()?;
            if let Some(v) = option_value(&name, &v)? {
                o.set(&name, v).map_err(to_py)?;
            }
        }
    }
    if let Some(p) = restoration_prompt.filter(|p| !p.is_none()) {
        if matches!(o.restoration_prompt, RestorationInput::Verbatim(_)) {
            return Err(invalid(
                "restoration_prompt",
                "give restoration_prompt or verbatim_restoration_prompt, not both".into(),
            ));
        }
        o.restoration_prompt = if let Ok(p) = p.cast::<PyRestorationPrompt>() {
            RestorationInput::Prompt(p.get().0)
        } else if let Ok(s) = p.extract::<String>() {
            RestorationInput::parse(&s).map_err(to_py)?
        } else {
            return Err(invalid(
                "restoration_prompt",
                "must be a str or a RestorationPrompt".into(),
            ));
        }
    }
    if let Some(l) = initial_latents.filter(|l| !l.is_none()) {
        let a = l
            .cast::<PyArrayDyn<f32>>()
            .map_err(|_| invalid("initial_latents", "must be a float32 numpy array".into()))?;
        let shape = a.shape().to_vec();
        let data: Vec<f32> = a.readonly().as_array().iter().copied().collect();
        let t = candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
            .map_err(|e| invalid("initial_latents", e.to_string()))?;
        o.initial_latents = Some(t);
    }
    let slot: ErrSlot = Arc::new(Mutex::new(None));
    // None: a progress bar in terminals and notebooks (tqdm, when installed); True: a bar
    // whenever tqdm is installed; False: nothing; a callable: that.
    let bar = |force: bool| -> PyResult<Option<Py<PyAny>>> {
        let b = py.import("spire")?.getattr("_progress_bar")?.call1((force,))?;
        Ok((!b.is_none()).then(|| b.unbind()))
    };
    let progress = match progress {
        None => bar(false)?,
        Some(p) => match p.bind(py).cast::<pyo3::types::PyBool>() {
            Ok(flag) if flag.is_true() => bar(true)?,
            Ok(_) => None,
            Err(_) => Some(p),
        },
    };
    if let Some(cb) = &progress {
        if !cb.bind(py).is_callable() {
            return Err(invalid(
                "progress",
                "must be callable as progress(step, total), True, False or None".into(),
            ));
        }
    }
    // Called at every stage and denoising step, with or without a user callback: a pending
    // signal (Ctrl-C) stops the run within one step and is re-raised as KeyboardInterrupt;
    // then the user's callback, whose falsy return (other than None) cancels.
    let s = slot.clone();
    o.progress = Some(Arc::new(move |p: &Progress| {
        Python::attach(|py| {
            let keep = |e: PyErr| {
                if let Ok(mut g) = s.lock() {
                    *g = Some(e);
                }
                false
            };
            if let Err(e) = py.check_signals() {
                return keep(e);
            }
            let Some(cb) = &progress else {
                return true;
            };
            if p.stage != Stage::Denoising {
                return true;
            }
            match cb.call1(py, (p.step, p.total)) {
                Ok(v) => {
                    let v = v.bind(py);
                    match v.is_truthy() {
                        Ok(truthy) => v.is_none() || truthy,
                        Err(e) => keep(e),
                    }
                }
                Err(e) => keep(e),
            }
        })
    }));
    Ok((o, slot))
}

/// A failed run's exception: the progress callback's own, re-raised unchanged, if it raised.
fn run_error(err: spire_core::Error, slot: &ErrSlot) -> PyErr {
    if err.kind() == spire_core::ErrorKind::Cancelled {
        if let Some(e) = slot.lock().ok().and_then(|mut g| g.take()) {
            return e;
        }
    }
    to_py(err)
}

/// One [`spire_core::batch::ImagePrompts`] per image from `restoration_prompt` and
/// `semantic_prompt`, each a list (one entry per image, `None` for the default) or a single
/// value for all.
fn per_image_prompts<'py>(
    restoration: Option<&Bound<'py, PyAny>>,
    semantic: Option<&Bound<'py, PyAny>>,
    n: usize,
) -> PyResult<Vec<spire_core::batch::ImagePrompts>> {
    let items = |o: Option<&Bound<'py, PyAny>>, name: &str| -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
        let Some(o) = o else {
            return Ok(vec![None; n]);
        };
        if o.is_instance_of::<pyo3::types::PyList>() || o.is_instance_of::<pyo3::types::PyTuple>() {
            let v: Vec<Bound<'py, PyAny>> = o.extract()?;
            if v.len() != n {
                return Err(invalid(
                    name,
                    format!("has {} entries for {n} images (one per image)", v.len()),
                ));
            }
            Ok(v.into_iter().map(|x| (!x.is_none()).then_some(x)).collect())
        } else {
            Ok(vec![Some(o.clone()); n])
        }
    };
    let r = items(restoration, "restoration_prompt")?;
    let s = items(semantic, "semantic_prompt")?;
    r.into_iter()
        .zip(s)
        .enumerate()
        .map(|(i, (r, s))| {
            let restoration = match r {
                None => None,
                Some(r) => Some(if let Ok(p) = r.extract::<PyRef<'_, PyRestorationPrompt>>() {
                    p.0
                } else {
                    let t: String = r.extract().map_err(|_| {
                        pyo3::exceptions::PyTypeError::new_err(format!(
                            "restoration_prompt[{i}] must be a str, a RestorationPrompt or None"
                        ))
                    })?;
                    RestorationPrompt::parse(&t).map_err(to_py)?
                }),
            };
            let semantic = match s {
                None => None,
                Some(s) => Some(s.extract::<String>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "semantic_prompt[{i}] must be a str or None"
                    ))
                })?),
            };
            Ok(spire_core::batch::ImagePrompts {
                restoration,
                semantic,
            })
        })
        .collect()
}

/// `p` made absolute (against the working directory), so a pickle works from another one.
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Load options from the device and dtype names the Python API takes.
fn load_options(
    device: Option<&str>,
    dtype: Option<&str>,
    weight_dtype: Option<&str>,
) -> PyResult<LoadOptions> {
    let mut opts = LoadOptions::default();
    if let Some(d) = weight_dtype {
        opts.weight_dtype = Some(spire_core::device::parse_weight_dtype(d).map_err(to_py)?);
    }
    if let Some(d) = device {
        opts.device = spire_core::device::parse_device(d).map_err(to_py)?;
    }
    if let Some(d) = dtype {
        opts.dtype = spire_core::device::parse_dtype(d).map_err(to_py)?;
    }
    Ok(opts)
}

impl PyRestorer {
    /// The core handle.
    pub(crate) fn core(&self) -> &Restorer {
        &self.inner
    }
}

#[pymethods]
impl PyRestorer {
    /// The built-in spire-tiny model (embedded in the library; loaded once per process), on
    /// `device` ("cpu", "cuda", "cuda:N", "metal") in `dtype` ("float32", "float16",
    /// "bfloat16"); `weight_dtype` ("float16", "bfloat16") keeps convolution and linear
    /// weights in half size while computing in `dtype`.
    #[staticmethod]
    #[pyo3(signature = (*, device=None, dtype=None, weight_dtype=None))]
    fn builtin(
        py: Python<'_>,
        device: Option<&str>,
        dtype: Option<&str>,
        weight_dtype: Option<&str>,
    ) -> PyResult<Self> {
        let opts = load_options(device, dtype, weight_dtype)?;
        let inner = py
            .detach(|| guard(|| Restorer::builtin_with(&opts)))
            .map_err(to_py)?;
        let source = Source {
            kind: "builtin",
            path: None,
            kwargs: vec![
                ("device", device.map(str::to_owned)),
                ("dtype", dtype.map(str::to_owned)),
                ("weight_dtype", weight_dtype.map(str::to_owned)),
            ],
        };
        Ok(Self { inner, source })
    }

    /// Loads a model folder (`weight_dtype` as in [`builtin`]).
    #[staticmethod]
    #[pyo3(signature = (path, *, device=None, dtype=None, variant=None, adaptor=None, weight_dtype=None))]
    fn from_pretrained(
        py: Python<'_>,
        path: PathBuf,
        device: Option<&str>,
        dtype: Option<&str>,
        variant: Option<String>,
        adaptor: Option<PathBuf>,
        weight_dtype: Option<&str>,
    ) -> PyResult<Self> {
        let mut opts = load_options(device, dtype, weight_dtype)?;
        opts.variant = variant.clone();
        opts.adaptor = adaptor.clone();
        let inner = py
            .detach(|| guard(|| Restorer::from_pretrained(&path, &opts)))
            .map_err(to_py)?;
        let source = Source {
            kind: "pretrained",
            path: Some(absolute(&path)),
            kwargs: vec![
                ("device", device.map(str::to_owned)),
                ("dtype", dtype.map(str::to_owned)),
                ("variant", variant),
                ("adaptor", adaptor.map(|a| absolute(&a).display().to_string())),
                ("weight_dtype", weight_dtype.map(str::to_owned)),
            ],
        };
        Ok(Self { inner, source })
    }

    /// Loads a single-file Stable Diffusion 1.x / 2.x checkpoint (original layout,
    /// `.safetensors`) with its adaptor: a single-file ControlNet or a ControlNet / SPIRE
    /// adaptor folder. `config` is a folder with `tokenizer/` (and optionally `scheduler/` and
    /// diffusers configs), e.g. the model's diffusers folder; `prediction_type` ("epsilon",
    /// "v_prediction") says what the backbone predicts where the file cannot.
    #[staticmethod]
    #[pyo3(signature = (path, *, adaptor, config, prediction_type=None, device=None, dtype=None, weight_dtype=None))]
    #[allow(clippy::too_many_arguments)] // Python keywords
    fn from_single_file(
        py: Python<'_>,
        path: PathBuf,
        adaptor: PathBuf,
        config: PathBuf,
        prediction_type: Option<&str>,
        device: Option<&str>,
        dtype: Option<&str>,
        weight_dtype: Option<&str>,
    ) -> PyResult<Self> {
        let mut opts = load_options(device, dtype, weight_dtype)?;
        let source = Source {
            kind: "single_file",
            path: Some(absolute(&path)),
            kwargs: vec![
                ("adaptor", Some(absolute(&adaptor).display().to_string())),
                ("config", Some(absolute(&config).display().to_string())),
                ("prediction_type", prediction_type.map(str::to_owned)),
                ("device", device.map(str::to_owned)),
                ("dtype", dtype.map(str::to_owned)),
                ("weight_dtype", weight_dtype.map(str::to_owned)),
            ],
        };
        opts.adaptor = Some(adaptor);
        opts.config = Some(config);
        if let Some(p) = prediction_type {
            opts.prediction_type =
                Some(spire_core::scheduler::PredictionType::parse(p).ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "prediction_type: unknown `{p}` (epsilon, v_prediction or sample)"
                    ))
                })?);
        }
        let inner = py
            .detach(|| guard(|| Restorer::from_single_file(&path, &opts)))
            .map_err(to_py)?;
        Ok(Self { inner, source })
    }

    #[doc = include_str!("restore_doc.txt")]
    #[pyo3(signature = (image, *, restoration_prompt=None, initial_latents=None, progress=None, **options))]
    fn restore(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        restoration_prompt: Option<&Bound<'_, PyAny>>,
        initial_latents: Option<&Bound<'_, PyAny>>,
        progress: Option<Py<PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let img = from_numpy(image, "image")?;
        let (opts, slot) = build_options(
            py,
            self.inner.default_options(),
            restoration_prompt,
            initial_latents,
            options,
            progress,
        )?;
        let inner = self.inner.clone();
        let out = py
            .detach(|| guard(|| inner.restore(&img.view()?, &opts)))
            .map_err(|e| run_error(e, &slot))?;
        to_numpy(py, out, &img)
    }

    /// Restores a list of images (image `i` with seed `seed + i`); equal sizes run as one batch.
    /// `restoration_prompt` and `semantic_prompt` may be lists, one prompt per image (`None`
    /// entries keep the default); images then run one at a time with the same results as
    /// one-image calls. Every other keyword is an option of `restore` (see its help).
    #[pyo3(signature = (images, *, restoration_prompt=None, semantic_prompt=None, initial_latents=None, progress=None, **options))]
    #[allow(clippy::too_many_arguments)]
    fn restore_batch(
        &self,
        py: Python<'_>,
        images: Vec<Bound<'_, PyAny>>,
        restoration_prompt: Option<&Bound<'_, PyAny>>,
        semantic_prompt: Option<&Bound<'_, PyAny>>,
        initial_latents: Option<&Bound<'_, PyAny>>,
        progress: Option<Py<PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let imgs: Vec<Owned> = images
            .iter()
            .enumerate()
            .map(|(i, im)| from_numpy(im, &format!("images[{i}]")))
            .collect::<PyResult<_>>()?;
        let is_list = |o: Option<&Bound<'_, PyAny>>| {
            o.is_some_and(|o| {
                o.is_instance_of::<pyo3::types::PyList>() || o.is_instance_of::<pyo3::types::PyTuple>()
            })
        };
        let per_image = is_list(restoration_prompt) || is_list(semantic_prompt);
        let prompts = if per_image {
            Some(per_image_prompts(
                restoration_prompt,
                semantic_prompt,
                imgs.len(),
            )?)
        } else {
            None
        };
        let (mut opts, slot) = build_options(
            py,
            self.inner.default_options(),
            if per_image { None } else { restoration_prompt },
            initial_latents,
            options,
            progress,
        )?;
        if let Some(s) = semantic_prompt.filter(|s| !per_image && !s.is_none()) {
            opts.semantic_prompt = s.extract().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("semantic_prompt must be a str or a list of str")
            })?;
        }
        let inner = self.inner.clone();
        let outs = py
            .detach(|| {
                guard(|| {
                    let views = imgs
                        .iter()
                        .map(Owned::view)
                        .collect::<spire_core::Result<Vec<_>>>()?;
                    match &prompts {
                        Some(p) => spire_core::batch::restore_each(&inner, &views, &opts, p),
                        None => inner.restore_batch(&views, &opts),
                    }
                })
            })
            .map_err(|e| run_error(e, &slot))?;
        outs.into_iter()
            .zip(&imgs)
            .map(|(o, like)| to_numpy(py, o, like))
            .collect()
    }

    /// True when both handles use the same loaded weights.
    fn shares_weights_with(&self, other: &PyRestorer) -> bool {
        self.inner.shares_weights_with(&other.inner)
    }

    /// The model folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// The restore options the model recommends (its `spire.json`), as a dict; `restore`
    /// starts from them, and arguments you pass override them.
    #[getter]
    fn defaults<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, v) in self.inner.defaults().iter() {
            match v {
                OptionValue::Auto => d.set_item(name, "auto")?,
                OptionValue::Bool(b) => d.set_item(name, *b)?,
                OptionValue::Int(n) => d.set_item(name, *n)?,
                OptionValue::Float(x) => d.set_item(name, *x)?,
                OptionValue::Text(t) => d.set_item(name, t)?,
            }
        }
        Ok(d)
    }

    /// Images are padded internally to a multiple of this many pixels.
    #[getter]
    fn size_multiple(&self) -> usize {
        self.inner.size_multiple()
    }

    fn __copy__(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
        }
    }

    /// Pickles as a reference to its source (the model folder, single file or built-in model
    /// and the load options), not the weights: unpickling loads it once per process
    /// (`spire._restorer_from_source` caches it), so restorers can be shipped to worker
    /// processes (multiprocessing, Ray) cheaply. The files must exist at the same paths there.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let f = py.import("spire")?.getattr("_restorer_from_source")?;
        let kwargs = pyo3::types::PyDict::new(py);
        for (k, v) in &self.source.kwargs {
            if let Some(v) = v {
                kwargs.set_item(*k, v)?;
            }
        }
        let args = (self.source.kind, self.source.path.clone(), kwargs)
            .into_pyobject(py)?
            .into_any();
        Ok((f, args))
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
        }
    }

    fn __repr__(&self) -> String {
        format!("Restorer({:?})", self.inner.path().display().to_string())
    }
}
