//! The C ABI called from Rust: NULL arguments, bad sizes and strides, a too-small buffer, the
//! last-error text, cancellation, and a panic inside turned into `SPIRE_ERROR_PANIC`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

use spire::*;

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(spire_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn load() -> *mut spire_restorer {
    let dir = CString::new(fixtures().join("tiny-sd1").to_str().unwrap()).unwrap();
    let adaptor = CString::new(fixtures().join("tiny-spire-adaptor").to_str().unwrap()).unwrap();
    let mut lo = std::mem::MaybeUninit::<spire_load_options>::uninit();
    unsafe { spire_load_options_init(lo.as_mut_ptr()) };
    let mut lo = unsafe { lo.assume_init() };
    lo.adaptor = adaptor.as_ptr();
    let mut r = null_mut();
    assert_eq!(
        unsafe { spire_restorer_new(dir.as_ptr(), &lo, &mut r) },
        SPIRE_OK,
        "{}",
        last_error()
    );
    r
}

fn params(steps: u32) -> spire_restore_params {
    let mut p = std::mem::MaybeUninit::<spire_restore_params>::uninit();
    unsafe { spire_restore_params_init(p.as_mut_ptr()) };
    let mut p = unsafe { p.assume_init() };
    p.num_inference_steps = steps;
    p
}

fn rgb(w: u32, h: u32) -> Vec<u8> {
    (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect()
}

/// A tightly packed RGB8 view of `px` (which must outlive it).
fn rgb8_view(px: &[u8], w: u32, h: u32) -> spire_image_view {
    assert_eq!(px.len(), (w * h * 3) as usize);
    spire_image_view {
        width: w,
        height: h,
        stride: (w * 3) as _,
        format: SPIRE_PIXEL_RGB8,
        data: px.as_ptr(),
    }
}

#[test]
fn null_arguments_are_reported_not_crashed_on() {
    let mut r = null_mut();
    assert_eq!(
        unsafe { spire_restorer_new(null(), null(), &mut r) },
        SPIRE_ERROR_NULL_POINTER
    );
    assert!(last_error().contains("model_dir"));
    let dir = CString::new("x").unwrap();
    assert_eq!(
        unsafe { spire_restorer_new(dir.as_ptr(), null(), null_mut()) },
        SPIRE_ERROR_NULL_POINTER
    );
    let mut out = null_mut();
    let px = rgb(8, 8);
    let v = rgb8_view(&px, 8, 8);
    assert_eq!(
        unsafe { spire_restorer_restore(null(), &v, null(), None, null_mut(), &mut out) },
        SPIRE_ERROR_NULL_POINTER
    );
    assert!(last_error().contains("restorer"));
    let r = load();
    assert_eq!(
        unsafe { spire_restorer_restore(r, null(), null(), None, null_mut(), &mut out) },
        SPIRE_ERROR_NULL_POINTER
    );
    assert_eq!(
        unsafe { spire_restorer_restore(r, &v, null(), None, null_mut(), null_mut()) },
        SPIRE_ERROR_NULL_POINTER
    );
    assert_eq!(
        unsafe { spire_prompt_parse(null(), null_mut()) },
        SPIRE_ERROR_NULL_POINTER
    );
    assert_eq!(
        unsafe { spire_image_load(null(), &mut out) },
        SPIRE_ERROR_NULL_POINTER
    );
    unsafe {
        spire_restorer_free(null_mut());
        spire_image_free(null_mut());
        spire_load_options_init(null_mut());
        spire_restore_params_init(null_mut());
        spire_restorer_free(r);
    }
}

#[test]
fn bad_sizes_and_strides_are_invalid_images() {
    let r = load();
    let px = rgb(16, 16);
    let p = params(1);
    for (w, h, stride, format, what) in [
        (16u32, 16u32, 10usize, SPIRE_PIXEL_RGB8, "stride"),
        (1, 16, 48, SPIRE_PIXEL_RGB8, "at least"),
        (0, 0, 0, SPIRE_PIXEL_RGB8, "empty"),
        (16, 16, 48, 99, "pixel format"),
        (16, 17, 48, SPIRE_PIXEL_RGB8, ""),
    ] {
        // The last case claims one more row than the buffer has: only safe because the view
        // is validated against the length the caller declares, so use a bigger buffer there.
        let big = rgb(16, 18);
        let data = if h == 17 { big.as_ptr() } else { px.as_ptr() };
        let v = spire_image_view {
            width: w,
            height: h,
            stride,
            format,
            data,
        };
        let mut out = null_mut();
        let s = unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut out) };
        if h == 17 {
            assert_eq!(s, SPIRE_OK);
            unsafe { spire_image_free(out) };
            continue;
        }
        assert_eq!(s, SPIRE_ERROR_INVALID_IMAGE, "{what}: {}", last_error());
        assert!(out.is_null());
        assert!(last_error().contains(what), "{what}: {}", last_error());
    }
    unsafe { spire_restorer_free(r) };
}

#[test]
fn too_small_buffer_reports_the_size_needed() {
    let r = load();
    let px = rgb(9, 7);
    let v = rgb8_view(&px, 9, 7);
    let mut p = params(1);
    let prompt = CString::new("Upsample with scale 2").unwrap();
    p.restoration_prompt = prompt.as_ptr();
    let (mut need, mut w, mut h) = (0usize, 0u32, 0u32);
    let s = unsafe {
        spire_restorer_restore_into(
            r,
            &v,
            &p,
            None,
            null_mut(),
            null_mut(),
            0,
            &mut need,
            &mut w,
            &mut h,
        )
    };
    assert_eq!(s, SPIRE_ERROR_BUFFER_TOO_SMALL);
    assert_eq!((need, w, h), (18 * 14 * 3, 18, 14));
    assert!(last_error().contains(&need.to_string()));
    let mut buf = vec![0u8; need];
    let s = unsafe {
        spire_restorer_restore_into(
            r,
            &v,
            &p,
            None,
            null_mut(),
            buf.as_mut_ptr(),
            need,
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, SPIRE_OK, "{}", last_error());
    assert!(last_error().is_empty(), "success clears the message");
    assert!(buf.iter().any(|&b| b != 0));
    let mut text = [0 as std::ffi::c_char; 8];
    let pr = spire_prompt {
        struct_size: std::mem::size_of::<spire_prompt>() as u32,
        denoise_sigma: 0.1,
        ..Default::default()
    };
    let mut n = 0;
    assert_eq!(
        unsafe { spire_prompt_render(&pr, text.as_mut_ptr(), text.len(), &mut n) },
        SPIRE_ERROR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, "Denoise with sigma 0.10".len() + 1);
    unsafe { spire_restorer_free(r) };
}

unsafe extern "C-unwind" fn stop_at(step: u32, _total: u32, user: *mut c_void) -> i32 {
    let seen = unsafe { &mut *(user as *mut Vec<u32>) };
    seen.push(step);
    i32::from(step >= 1)
}

#[test]
fn non_zero_from_the_callback_cancels_within_one_step() {
    let r = load();
    let px = rgb(16, 16);
    let v = rgb8_view(&px, 16, 16);
    let p = params(10);
    let mut seen: Vec<u32> = Vec::new();
    let mut out = null_mut();
    let s = unsafe {
        spire_restorer_restore(
            r,
            &v,
            &p,
            Some(stop_at),
            &mut seen as *mut _ as *mut c_void,
            &mut out,
        )
    };
    assert_eq!(s, SPIRE_ERROR_CANCELLED);
    assert_eq!(seen, vec![0, 1]);
    assert!(out.is_null());
    assert_eq!(
        unsafe { CStr::from_ptr(spire_status_str(s)) }.to_str().unwrap(),
        "cancelled"
    );
    unsafe { spire_restorer_free(r) };
}

unsafe extern "C-unwind" fn panicking(_step: u32, _total: u32, _user: *mut c_void) -> i32 {
    panic!("callback exploded");
}

#[test]
fn a_panic_inside_becomes_spire_error_panic() {
    let r = load();
    let px = rgb(16, 16);
    let v = rgb8_view(&px, 16, 16);
    let p = params(2);
    let mut out = null_mut();
    let s = unsafe { spire_restorer_restore(r, &v, &p, Some(panicking), null_mut(), &mut out) };
    assert_eq!(s, SPIRE_ERROR_PANIC);
    assert!(last_error().contains("callback exploded"), "{}", last_error());
    // The library stays usable afterwards.
    let s = unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut out) };
    assert_eq!(s, SPIRE_OK);
    unsafe {
        spire_image_free(out);
        spire_restorer_free(r);
    }
}

#[test]
fn last_error_is_per_thread() {
    let mut r = null_mut();
    assert_eq!(
        unsafe { spire_restorer_new(null(), null(), &mut r) },
        SPIRE_ERROR_NULL_POINTER
    );
    let other = std::thread::spawn(last_error).join().unwrap();
    assert!(other.is_empty());
    assert!(!last_error().is_empty());
}

#[test]
fn params_init_takes_the_core_defaults() {
    let p = params(0);
    let d = spire_core::RestoreOptions::default();
    assert_eq!(p.restoration_guidance, d.restoration_guidance);
    assert_eq!(p.semantic_guidance, d.semantic_guidance);
    assert_eq!(p.strength, d.strength);
    assert_eq!(p.seed, d.seed);
    assert_eq!(p.conditioning_scale, d.conditioning_scale);
    assert_eq!(params(7).num_inference_steps, 7);
    assert_eq!(p.tile_overlap as usize, d.tile_overlap);
    assert_eq!(
        (p.tile_size, p.vae_tile_size, p.memory_limit),
        (0, 0, SPIRE_MEMORY_AUTO)
    );
    let mut q = std::mem::MaybeUninit::<spire_restore_params>::uninit();
    unsafe { spire_restore_params_init(q.as_mut_ptr()) };
    assert_eq!(
        unsafe { q.assume_init() }.num_inference_steps as usize,
        d.num_inference_steps
    );
}

#[test]
fn memory_limit_and_tiles_reach_the_core() {
    let r = load();
    let px = rgb(40, 32);
    let v = rgb8_view(&px, 40, 32);
    let mut img = null_mut();
    let mut p = params(1);
    p.memory_limit = 1000;
    assert_eq!(
        unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut img) },
        SPIRE_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("memory_limit"), "{}", last_error());
    // Tiles asked for explicitly give the untiled result (one latent tile; autoencoder tiles
    // equal the whole up to float error).
    let run = |p: &spire_restore_params| {
        let mut img = null_mut();
        assert_eq!(
            unsafe { spire_restorer_restore(r, &v, p, None, null_mut(), &mut img) },
            SPIRE_OK,
            "{}",
            last_error()
        );
        let out = unsafe { std::slice::from_raw_parts((*img).data, 40 * 32 * 3) }.to_vec();
        unsafe { spire_image_free(img) };
        out
    };
    let mut p = params(1);
    p.memory_limit = SPIRE_MEMORY_UNLIMITED;
    let whole = run(&p);
    p.tile_size = 1000;
    p.vae_tile_size = 16;
    let tiled = run(&p);
    let worst = whole
        .iter()
        .zip(&tiled)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "{worst}");
    unsafe { spire_restorer_free(r) };
}

#[test]
fn params_from_an_older_header_get_defaults_for_new_fields() {
    let r = load();
    let px = rgb(16, 16);
    let v = rgb8_view(&px, 16, 16);
    // A v1 struct: only the bytes up to `color_fix`, with an impossible memory limit after it
    // that the library must not read.
    let mut p = params(1);
    p.memory_limit = 1;
    p.struct_size = std::mem::offset_of!(spire_restore_params, tile_size) as u32;
    let mut img = null_mut();
    assert_eq!(
        unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut img) },
        SPIRE_OK,
        "{}",
        last_error()
    );
    unsafe { spire_image_free(img) };
    p.struct_size = 8;
    assert_eq!(
        unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut img) },
        SPIRE_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("struct_size"));
    unsafe { spire_restorer_free(r) };
}

#[test]
fn builtin_model_needs_no_files() {
    assert_eq!(
        unsafe { spire_restorer_new_builtin(null_mut()) },
        SPIRE_ERROR_NULL_POINTER
    );
    let mut r = null_mut();
    assert_eq!(
        unsafe { spire_restorer_new_builtin(&mut r) },
        SPIRE_OK,
        "{}",
        last_error()
    );
    let px = rgb(30, 22);
    let v = rgb8_view(&px, 30, 22);
    let prompt = CString::new("Upsample 2x").unwrap();
    let mut p = params(2);
    p.restoration_prompt = prompt.as_ptr();
    let mut img = null_mut();
    assert_eq!(
        unsafe { spire_restorer_restore(r, &v, &p, None, null_mut(), &mut img) },
        SPIRE_OK,
        "{}",
        last_error()
    );
    assert_eq!(unsafe { ((*img).width, (*img).height) }, (60, 44));
    unsafe { spire_image_free(img) };
    unsafe { spire_restorer_free(r) };
}

/// Restores `v` with 2 steps and seed 5; returns the C image (format, stride, bytes).
fn restore_view(r: *mut spire_restorer, v: &spire_image_view) -> (spire_pixel_format, usize, Vec<u8>) {
    let p = params(2);
    let mut out = null_mut();
    let s = unsafe { spire_restorer_restore(r, v, &p, None, null_mut(), &mut out) };
    assert_eq!(s, SPIRE_OK, "format {}: {}", v.format, last_error());
    let o = unsafe { &*out };
    assert_eq!(
        o.data as usize % 16,
        0,
        "the library's buffers are 16-byte aligned"
    );
    let bytes = unsafe { std::slice::from_raw_parts(o.data, o.stride * o.height as usize) }.to_vec();
    let res = (o.format, o.stride, bytes);
    unsafe { spire_image_free(out) };
    res
}

#[test]
fn bgr_16_bit_and_float_pixels_in_and_out() {
    let r = load();
    let (w, h) = (12u32, 10u32);
    let px = rgb(w, h);
    let n = (w * h) as usize;
    let (f_rgb, stride_rgb, out_rgb) = restore_view(r, &rgb8_view(&px, w, h));
    assert_eq!((f_rgb, stride_rgb), (SPIRE_PIXEL_RGB8, 36));

    // BGR in → BGR out, the same pixels with red and blue swapped.
    let bgr: Vec<u8> = px.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
    let v = spire_image_view {
        format: SPIRE_PIXEL_BGR8,
        ..rgb8_view(&bgr, w, h)
    };
    let (f, _, out) = restore_view(r, &v);
    assert_eq!(f, SPIRE_PIXEL_BGR8);
    let back: Vec<u8> = out.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
    assert_eq!(back, out_rgb);

    // 16-bit in → 16-bit out, not rounded to 8 bits; an unaligned buffer (copied) gives the
    // same result as an aligned one (borrowed).
    let px16: Vec<u16> = px.iter().map(|&b| u16::from(b) * 257 + 3).collect();
    let v16 = spire_image_view {
        width: w,
        height: h,
        stride: w as usize * 6,
        format: SPIRE_PIXEL_RGB16,
        data: px16.as_ptr().cast(),
    };
    let (f, stride, out16) = restore_view(r, &v16);
    assert_eq!((f, stride), (SPIRE_PIXEL_RGB16, w as usize * 6));
    let samples: Vec<u16> = out16
        .chunks(2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(samples.len(), n * 3);
    assert!(
        samples.iter().any(|s| s % 257 != 0),
        "16-bit output rounded to 8 bits"
    );
    let mut shifted = vec![0u8; px16.len() * 2 + 1];
    for (i, s) in px16.iter().enumerate() {
        shifted[1 + 2 * i..3 + 2 * i].copy_from_slice(&s.to_ne_bytes());
    }
    let (_, _, out_unaligned) = restore_view(
        r,
        &spire_image_view {
            data: shifted[1..].as_ptr(),
            ..v16
        },
    );
    assert_eq!(out_unaligned, out16);
    // The same numbers through the core directly.
    let core = spire_core::Restorer::from_pretrained(
        fixtures().join("tiny-sd1"),
        &spire_core::LoadOptions::default().with_adaptor(Some(fixtures().join("tiny-spire-adaptor"))),
    )
    .unwrap();
    let mut o = core.default_options();
    o.num_inference_steps = 2;
    let p = params(2);
    o.seed = p.seed;
    let view = spire_core::ImageView::new(
        w as usize,
        h as usize,
        spire_core::ColorType::Rgb,
        spire_core::Samples::U16(&px16),
    )
    .unwrap();
    let direct = core.restore(&view, &o).unwrap();
    assert_eq!(direct.as_u16().unwrap(), &samples[..]);

    // Float in → float out.
    let pxf: Vec<f32> = px.iter().map(|&b| f32::from(b) / 255.0).collect();
    let vf = spire_image_view {
        width: w,
        height: h,
        stride: w as usize * 12,
        format: SPIRE_PIXEL_RGB_F32,
        data: pxf.as_ptr().cast(),
    };
    let (f, _, outf) = restore_view(r, &vf);
    assert_eq!(f, SPIRE_PIXEL_RGB_F32);
    let fl: Vec<f32> = outf
        .chunks(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(fl.iter().all(|x| (0.0..=1.0).contains(x)));
    // NaN in a float image is refused, naming the sample.
    let mut bad = pxf.clone();
    bad[7] = f32::NAN;
    let vb = spire_image_view {
        data: bad.as_ptr().cast(),
        ..vf
    };
    let mut out = null_mut();
    let s = unsafe { spire_restorer_restore(r, &vb, &params(2), None, null_mut(), &mut out) };
    assert_eq!(s, SPIRE_ERROR_INVALID_IMAGE);
    assert!(last_error().contains("NaN"), "{}", last_error());
    // restore_into sizes 16-bit outputs in bytes.
    let mut need = 0usize;
    let s = unsafe {
        spire_restorer_restore_into(
            r,
            &v16,
            &p,
            None,
            null_mut(),
            null_mut(),
            0,
            &mut need,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!((s, need), (SPIRE_ERROR_BUFFER_TOO_SMALL, n * 6));
    let mut buf = vec![0u8; need];
    let s = unsafe {
        spire_restorer_restore_into(
            r,
            &v16,
            &p,
            None,
            null_mut(),
            buf.as_mut_ptr(),
            need,
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, SPIRE_OK, "{}", last_error());
    assert_eq!(buf, out16);
    // An unknown format and a stride shorter than a 16-bit row are named.
    let s = unsafe {
        spire_restorer_restore(
            r,
            &spire_image_view { format: 99, ..v16 },
            &p,
            None,
            null_mut(),
            &mut out,
        )
    };
    assert_eq!(s, SPIRE_ERROR_INVALID_IMAGE);
    assert!(last_error().contains("pixel format 99"), "{}", last_error());
    let s = unsafe {
        spire_restorer_restore(
            r,
            &spire_image_view {
                stride: w as usize * 3,
                ..v16
            },
            &p,
            None,
            null_mut(),
            &mut out,
        )
    };
    assert_eq!(s, SPIRE_ERROR_INVALID_IMAGE);
    assert!(last_error().contains("stride"), "{}", last_error());
    unsafe { spire_restorer_free(r) };
}

unsafe extern "C" fn collect_log(level: spire_log_level, msg: *const std::ffi::c_char, user: *mut c_void) {
    let seen = unsafe { &*(user as *const std::sync::Mutex<Vec<(i32, String)>>) };
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    seen.lock().unwrap().push((level, text));
}

#[test]
fn log_callback_and_thread_count() {
    let seen: &'static std::sync::Mutex<Vec<(i32, String)>> = Box::leak(Box::default());
    let user = seen as *const _ as *mut c_void;
    assert_eq!(
        unsafe { spire_set_log_callback(Some(collect_log), 9, user) },
        SPIRE_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("max_level"), "{}", last_error());
    assert_eq!(
        unsafe { spire_set_log_callback(Some(collect_log), SPIRE_LOG_INFO, user) },
        SPIRE_OK
    );
    let r = load();
    let msgs = seen.lock().unwrap().clone();
    assert!(
        msgs.iter()
            .any(|(l, m)| *l == SPIRE_LOG_INFO && m.contains("loaded") && m.contains("tiny-sd1")),
        "{msgs:?}"
    );
    // Removed: nothing more arrives (other tests' threads may log meanwhile; this one loads again).
    assert_eq!(
        unsafe { spire_set_log_callback(None, SPIRE_LOG_INFO, null_mut()) },
        SPIRE_OK
    );
    let before = seen.lock().unwrap().len();
    let r2 = load();
    assert_eq!(seen.lock().unwrap().len(), before);
    unsafe {
        spire_restorer_free(r);
        spire_restorer_free(r2);
    }
    // Threads: 0 is refused; the count the pool already has is accepted; another is refused
    // once the pool runs, naming `threads`.
    assert_eq!(spire_set_num_threads(0), SPIRE_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("threads"), "{}", last_error());
    let n = spire_num_threads();
    assert!(n >= 1);
    assert_eq!(spire_set_num_threads(n), SPIRE_OK, "{}", last_error());
    assert_eq!(spire_set_num_threads(n + 1), SPIRE_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("already run"), "{}", last_error());
}
