//! Scheduler trajectories equal to diffusers' (fixtures from `scripts/make_fixtures.py`):
//! timesteps, init noise sigma, every step's scaled input and output, and the noising used to
//! start at an intermediate step; plus the DDPM forward process and v target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Tensor};
use common::{fixtures, max_abs_diff, reference};
use spire_core::scheduler::{SchedulerConfig, SchedulerKind};

fn scale(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0)
}

#[test]
fn trajectories_equal_diffusers() {
    let r = reference("schedulers");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("ref/schedulers.json")).unwrap())
            .unwrap();
    let cases = meta.as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = SchedulerConfig::from_json_str(&case["config"].to_string()).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let eta = case["eta"].as_f64().unwrap();
        let mut s = match cfg.kind {
            SchedulerKind::Ddim => Box::new(
                spire_core::scheduler::Ddim::new(&cfg, steps)
                    .unwrap()
                    .with_eta(eta),
            ) as Box<dyn spire_core::scheduler::Scheduler>,
            k => cfg.build(k, steps).unwrap(),
        };
        let want_ts: Vec<f64> = r[&format!("{name}.timesteps")]
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(s.timesteps().len(), want_ts.len(), "{name}: number of timesteps");
        for (a, b) in s.timesteps().iter().zip(&want_ts) {
            assert!(
                (a - b).abs() < 1e-3,
                "{name}: timesteps {:?} vs {:?}",
                s.timesteps(),
                want_ts
            );
        }
        let ins = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (s.init_noise_sigma() - ins).abs() < 1e-4 * ins.max(1.0),
            "{name}: init sigma {} vs {ins}",
            s.init_noise_sigma()
        );
        let mut sample = r[&format!("{name}.sample0")].clone();
        let mut worst = 0f32;
        for i in 0..steps {
            let scaled = s.scale_model_input(&sample, i).unwrap();
            let want_scaled = &r[&format!("{name}.scaled.{i}")];
            let d = max_abs_diff(&scaled, want_scaled) / scale(want_scaled);
            assert!(d < 1e-5, "{name} step {i}: scaled input off by {d}");
            let out = &r[&format!("{name}.model_out.{i}")];
            let noise = r.get(&format!("{name}.noise.{i}"));
            sample = s.step(out, i, &sample, noise).unwrap();
            let want = &r[&format!("{name}.prev.{i}")];
            let d = max_abs_diff(&sample, want) / scale(want);
            worst = worst.max(d);
            assert!(d < 1e-4, "{name} step {i}: relative error {d}");
            // Follow the reference trajectory so errors do not compound across cases.
            sample = want.clone();
        }
        // Noising to the start of an img2img run.
        let start = case["start"].as_u64().unwrap() as usize;
        let fresh = cfg.build(cfg.kind, steps).unwrap();
        let noisy = fresh
            .add_noise(&r[&format!("{name}.x0")], &r[&format!("{name}.noise")], start)
            .unwrap();
        let d = max_abs_diff(&noisy, &r[&format!("{name}.noisy")]);
        assert!(d < 1e-5, "{name}: add_noise off by {d}");
        eprintln!("{name}: {} steps, worst relative step error {worst:e}", steps);
    }
}

#[test]
fn ddpm_forward_process_and_velocity_equal_diffusers() {
    let r = reference("schedulers");
    let cfg = SchedulerConfig::default();
    let ac: Vec<f64> = r["ddpm.alphas_cumprod"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    // torch's vectorised linspace rounds differently per CPU (AVX2 vs AVX-512 lanes), so the
    // last bit of a beta can differ; everything else is the same arithmetic.
    for (i, (a, b)) in cfg.alphas_cumprod().iter().zip(&ac).enumerate() {
        assert!(
            (*a as f64 - b).abs() <= 1e-6 * b,
            "alphas_cumprod[{i}]: {a} vs {b}"
        );
    }
    let t: Vec<usize> = r["ddpm.t"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|&x| x as usize)
        .collect();
    let noisy = cfg.add_noise(&r["ddpm.x0"], &r["ddpm.noise"], &t).unwrap();
    assert!(max_abs_diff(&noisy, &r["ddpm.noisy"]) < 1e-6);
    let v = cfg.velocity(&r["ddpm.x0"], &r["ddpm.noise"], &t).unwrap();
    assert!(max_abs_diff(&v, &r["ddpm.velocity"]) < 1e-6);
}

#[test]
fn bad_step_counts_are_invalid_arguments() {
    let cfg = SchedulerConfig::default();
    for n in [0usize, 1001] {
        let err = cfg.build(SchedulerKind::Euler, n).err().unwrap();
        assert_eq!(err.kind(), spire_core::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("num_inference_steps"), "{err}");
    }
}
