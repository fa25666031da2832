// spire.hpp — header-only C++17 wrapper over the C ABI of SPIRE (include/spire.h).
//
// RAII owners for the library's objects, exceptions for errors:
//
//   spire::Restorer r("models/my-spire");
//   spire::RestoreParams p;
//   p.restoration_prompt("Denoise with sigma 0.1").steps(20);
//   spire::Image out = r.restore(spire::ImageView::rgb8(w, h, pixels), p);
//   // out.data(), out.width(), out.height(), out.stride()
//
// Copying a Restorer makes a new handle sharing the loaded model (spire_restorer_clone); a
// Restorer may be used from many threads at once. Every failing call throws spire::Error,
// which carries the status code and the library's message.
#ifndef SPIRE_HPP
#define SPIRE_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "spire.h"

namespace spire {

/// A failed libspire call: the status code and the message of spire_last_error_message().
class Error : public std::runtime_error {
public:
    Error(spire_status status, const std::string &message)
        : std::runtime_error(std::string(spire_status_str(status)) + ": " + message), status_(status) {}
    /// The status code (SPIRE_ERROR_*).
    spire_status status() const noexcept { return status_; }

private:
    spire_status status_;
};

namespace detail {
inline void check(spire_status s) {
    if (s != SPIRE_OK) throw Error(s, spire_last_error_message());
}
}  // namespace detail

/// A borrowed image (does not own its pixels).
struct ImageView {
    spire_image_view view{};

    static ImageView make(uint32_t width, uint32_t height, size_t stride, spire_pixel_format format,
                          const uint8_t *data) {
        ImageView v;
        v.view.width = width;
        v.view.height = height;
        v.view.stride = stride;
        v.view.format = format;
        v.view.data = data;
        return v;
    }
    /// Tightly packed 8-bit RGB.
    static ImageView rgb8(uint32_t width, uint32_t height, const uint8_t *data) {
        return make(width, height, size_t(width) * 3, SPIRE_PIXEL_RGB8, data);
    }
    /// Tightly packed 8-bit RGBA.
    static ImageView rgba8(uint32_t width, uint32_t height, const uint8_t *data) {
        return make(width, height, size_t(width) * 4, SPIRE_PIXEL_RGBA8, data);
    }
    /// Tightly packed 8-bit gray.
    static ImageView gray8(uint32_t width, uint32_t height, const uint8_t *data) {
        return make(width, height, size_t(width), SPIRE_PIXEL_GRAY8, data);
    }
    /// Tightly packed 8-bit BGR (OpenCV's CV_8UC3); the result comes back as BGR.
    static ImageView bgr8(uint32_t width, uint32_t height, const uint8_t *data) {
        return make(width, height, size_t(width) * 3, SPIRE_PIXEL_BGR8, data);
    }
    /// Tightly packed 8-bit BGRA.
    static ImageView bgra8(uint32_t width, uint32_t height, const uint8_t *data) {
        return make(width, height, size_t(width) * 4, SPIRE_PIXEL_BGRA8, data);
    }
    /// Tightly packed 16-bit RGB; the result comes back 16-bit.
    static ImageView rgb16(uint32_t width, uint32_t height, const uint16_t *data) {
        return make(width, height, size_t(width) * 6, SPIRE_PIXEL_RGB16, reinterpret_cast<const uint8_t *>(data));
    }
    /// Tightly packed float RGB in [0, 1]; the result comes back as float.
    static ImageView rgb_f32(uint32_t width, uint32_t height, const float *data) {
        return make(width, height, size_t(width) * 12, SPIRE_PIXEL_RGB_F32, reinterpret_cast<const uint8_t *>(data));
    }
};

/// Log messages at `max_level` (SPIRE_LOG_ERROR … SPIRE_LOG_TRACE) and more severe go to `fn`
/// (from any thread; an exception it throws is swallowed, as a log must not fail the work);
/// an empty function stops them. Process-wide.
using LogFn = std::function<void(spire_log_level level, const std::string &message)>;
inline void set_log_callback(LogFn fn, spire_log_level max_level = SPIRE_LOG_INFO) {
    static LogFn current;
    if (!fn) {
        detail::check(spire_set_log_callback(nullptr, max_level, nullptr));
        return;
    }
    // Stop the old sink before replacing the function it calls.
    detail::check(spire_set_log_callback(nullptr, max_level, nullptr));
    current = std::move(fn);
    auto trampoline = [](spire_log_level level, const char *message, void *user) {
        try {
            (*static_cast<LogFn *>(user))(level, message);
        } catch (...) {
        }
    };
    detail::check(spire_set_log_callback(trampoline, max_level, &current));
}

/// The CPU threads the library computes with (call before the first load or restore).
inline void set_num_threads(uint32_t threads) { detail::check(spire_set_num_threads(threads)); }

/// An image owned by the library (move-only); freed with spire_image_free.
class Image {
public:
    Image() = default;
    explicit Image(spire_image *img) noexcept : img_(img) {}
    Image(const Image &) = delete;
    Image &operator=(const Image &) = delete;
    Image(Image &&o) noexcept : img_(std::exchange(o.img_, nullptr)) {}
    Image &operator=(Image &&o) noexcept {
        if (this != &o) {
            spire_image_free(img_);
            img_ = std::exchange(o.img_, nullptr);
        }
        return *this;
    }
    ~Image() { spire_image_free(img_); }

    /// Loads a PNG, JPEG, TIFF or WebP file, upright by its EXIF orientation (format() says
    /// 8-bit, 16-bit or float).
    static Image load(const std::string &path) {
        spire_image *img = nullptr;
        detail::check(spire_image_load(path.c_str(), &img));
        return Image(img);
    }
    /// Writes PNG (or JPEG for .jpg/.jpeg).
    void save(const std::string &path) const {
        const ImageView v = view();
        detail::check(spire_image_save(path.c_str(), &v.view));
    }

    uint32_t width() const noexcept { return img_ ? img_->width : 0; }
    uint32_t height() const noexcept { return img_ ? img_->height : 0; }
    size_t stride() const noexcept { return img_ ? img_->stride : 0; }
    spire_pixel_format format() const noexcept { return img_ ? img_->format : 0; }
    const uint8_t *data() const noexcept { return img_ ? img_->data : nullptr; }
    explicit operator bool() const noexcept { return img_ != nullptr; }
    /// A view of this image, e.g. to restore it.
    ImageView view() const { return ImageView::make(width(), height(), stride(), format(), data()); }

private:
    spire_image *img_ = nullptr;
};

/// Restore options. Default-constructed: the library's defaults (spire_restore_params_init);
/// Restorer::default_params() gives the model's recommended ones (what restore(input) uses).
/// String options are stored here, so the params stay valid while this object lives.
class RestoreParams {
public:
    RestoreParams() { spire_restore_params_init(&p_); }
    /// From filled C params (string fields are not taken over).
    explicit RestoreParams(const spire_restore_params &p) : p_(p) { rebind(); }
    RestoreParams(const RestoreParams &o) : p_(o.p_) {
        for (int i = 0; i < 6; i++) strings_[i] = o.strings_[i];
        rebind();
    }
    RestoreParams &operator=(const RestoreParams &o) {
        p_ = o.p_;
        for (int i = 0; i < 6; i++) strings_[i] = o.strings_[i];
        rebind();
        return *this;
    }

    RestoreParams &restoration_prompt(std::string s) { return set(0, std::move(s)); }
    RestoreParams &semantic_prompt(std::string s) { return set(1, std::move(s)); }
    RestoreParams &negative_prompt(std::string s) { return set(2, std::move(s)); }
    RestoreParams &restoration_null_prompt(std::string s) { return set(3, std::move(s)); }
    /// Free text for adaptors trained on another prompt language, instead of restoration_prompt.
    RestoreParams &verbatim_restoration_prompt(std::string s) { return set(4, std::move(s)); }
    RestoreParams &num_inference_steps(uint32_t n) { p_.num_inference_steps = n; return *this; }
    /// The same as num_inference_steps.
    RestoreParams &steps(uint32_t n) { return num_inference_steps(n); }
    RestoreParams &scheduler(spire_scheduler s) { p_.scheduler = s; return *this; }
    /// DDIM's eta in [0, 1] (DDIM only).
    RestoreParams &eta(double e) { p_.eta = e; return *this; }
    RestoreParams &restoration_guidance(double g) { p_.restoration_guidance = g; return *this; }
    RestoreParams &semantic_guidance(double g) { p_.semantic_guidance = g; return *this; }
    RestoreParams &conditioning_scale(double s) { p_.conditioning_scale = s; return *this; }
    RestoreParams &strength(double s) { p_.strength = s; return *this; }
    RestoreParams &seed(uint64_t s) { p_.seed = s; return *this; }
    RestoreParams &color_fix(spire_color_fix c) { p_.color_fix = c; return *this; }
    /// Latent tile side (0: from the memory limit).
    RestoreParams &tile_size(uint32_t n) { p_.tile_size = n; return *this; }
    RestoreParams &tile_overlap(uint32_t n) { p_.tile_overlap = n; return *this; }
    /// Autoencoder tile side in pixels (0: from the memory limit).
    RestoreParams &vae_tile_size(uint32_t n) { p_.vae_tile_size = n; return *this; }
    /// Bytes beyond the weights, or SPIRE_MEMORY_AUTO / SPIRE_MEMORY_UNLIMITED.
    RestoreParams &memory_limit(uint64_t bytes) { p_.memory_limit = bytes; return *this; }
    /// Trust in the model's output for measurement consistency (0: off).
    RestoreParams &consistency(double tau) { p_.consistency = tau; return *this; }
    /// Noise-matched start on (default) or off.
    RestoreParams &match_noise(bool on) { p_.match_noise = on ? 1 : 0; return *this; }
    /// Enlarge the input by the prompt's upsample factor (default), or take it as already
    /// enlarged to the output size (false).
    RestoreParams &upsample_input(bool on) { p_.upsample_input = on ? 1 : 0; return *this; }
    /// Any restore option by its name in the options table, as text (docs/restoring.md),
    /// e.g. option("eta", "0.3"); applied after the fields. Errors surface when restoring.
    RestoreParams &option(const std::string &name, const std::string &value) {
        std::string all = strings_[5] ? *strings_[5] : std::string();
        return set(5, all + name + "=" + value + ";");
    }
    const spire_restore_params *get() const noexcept { return &p_; }

private:
    RestoreParams &set(int i, std::string s) {
        strings_[i] = std::move(s);
        rebind();
        return *this;
    }
    void rebind() {
        const char **f[6] = {&p_.restoration_prompt, &p_.semantic_prompt, &p_.negative_prompt,
                             &p_.restoration_null_prompt, &p_.verbatim_restoration_prompt, &p_.options};
        for (int i = 0; i < 6; i++) *f[i] = strings_[i] ? strings_[i]->c_str() : nullptr;
    }
    spire_restore_params p_{};
    std::optional<std::string> strings_[6];
};

/// Called with (step, total); return false to cancel (the call then throws Error with
/// SPIRE_ERROR_CANCELLED). An exception it throws cancels the run and is rethrown, unchanged,
/// from restore() once the library has returned.
using ProgressFn = std::function<bool(uint32_t step, uint32_t total)>;

/// A loaded model. Copies share the weights; thread-safe.
class Restorer {
public:
    explicit Restorer(const std::string &model_dir, const spire_load_options *options = nullptr) {
        detail::check(spire_restorer_new(model_dir.c_str(), options, &r_));
    }
    /// The built-in spire-tiny model (no files needed).
    static Restorer builtin() {
        spire_restorer *r = nullptr;
        detail::check(spire_restorer_new_builtin(&r));
        return Restorer(r);
    }
    Restorer(const Restorer &o) { detail::check(spire_restorer_clone(o.r_, &r_)); }
    Restorer &operator=(const Restorer &o) {
        if (this != &o) {
            spire_restorer *n = nullptr;
            detail::check(spire_restorer_clone(o.r_, &n));
            spire_restorer_free(r_);
            r_ = n;
        }
        return *this;
    }
    Restorer(Restorer &&o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
    Restorer &operator=(Restorer &&o) noexcept {
        if (this != &o) {
            spire_restorer_free(r_);
            r_ = std::exchange(o.r_, nullptr);
        }
        return *this;
    }
    ~Restorer() { spire_restorer_free(r_); }

    /// The options this model recommends (spire_restorer_default_params): start from these.
    RestoreParams default_params() const {
        spire_restore_params p{};
        detail::check(spire_restorer_default_params(r_, &p));
        return RestoreParams(p);
    }

    /// Restores `input` with the model's recommended options; throws Error on failure.
    Image restore(const ImageView &input) const { return restore(input, default_params()); }

    /// Restores `input`; throws Error on failure.
    Image restore(const ImageView &input, const RestoreParams &params,
                  const ProgressFn &progress = nullptr) const {
        spire_image *out = nullptr;
        spire_status s;
        if (progress) {
            Callback cb{&progress, nullptr};
            s = spire_restorer_restore(r_, &input.view, params.get(), &Restorer::trampoline, &cb, &out);
            // An exception the callback threw cancelled the run inside the library; it reaches
            // the caller here, unchanged, once the C call has returned.
            if (cb.error) {
                spire_image_free(out);
                std::rethrow_exception(cb.error);
            }
        } else {
            s = spire_restorer_restore(r_, &input.view, params.get(), nullptr, nullptr, &out);
        }
        detail::check(s);
        return Image(out);
    }

    /// True when both handles share one loaded model.
    bool shares_model_with(const Restorer &o) const noexcept { return spire_restorer_shares_model(r_, o.r_) != 0; }
    spire_restorer *handle() const noexcept { return r_; }

private:
    explicit Restorer(spire_restorer *r) noexcept : r_(r) {}
    struct Callback {
        const ProgressFn *fn;
        std::exception_ptr error;
    };
    static int32_t trampoline(uint32_t step, uint32_t total, void *user_data) {
        auto *cb = static_cast<Callback *>(user_data);
        try {
            return (*cb->fn)(step, total) ? 0 : 1;
        } catch (...) {
            // Exceptions must not cross the C boundary: cancel, keep it, rethrow after the call.
            cb->error = std::current_exception();
            return 1;
        }
    }
    spire_restorer *r_ = nullptr;
};

/// The canonical text of a restoration prompt ("upsample 4x" → "Upsample with scale 4.0").
inline std::string canonical_prompt(const std::string &text) {
    spire_prompt p{};
    detail::check(spire_prompt_parse(text.c_str(), &p));
    size_t n = 0;
    spire_status s = spire_prompt_render(&p, nullptr, 0, &n);
    if (s != SPIRE_ERROR_BUFFER_TOO_SMALL) detail::check(s);
    std::string out(n, '\0');
    detail::check(spire_prompt_render(&p, &out[0], n, nullptr));
    out.resize(n - 1);
    return out;
}

}  // namespace spire

#endif  // SPIRE_HPP
