/* C test of libspire: loading, restoring (packed and into a buffer), errors and NULL handling,
 * cancellation, prompts, degradation and image files. Run under AddressSanitizer and valgrind
 * by scripts/test_c.sh. Usage: test_capi <tests/fixtures dir> <scratch dir> */
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "spire.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, spire_last_error_message());                    \
            failures++;                                                              \
        }                                                                            \
    } while (0)

static int calls = 0;

static int32_t cancel_after_two(uint32_t step, uint32_t total, void *user_data) {
    int *seen = (int *)user_data;
    (void)total;
    *seen = (int)step;
    calls++;
    return step >= 2 ? 1 : 0;
}

static uint8_t *make_rgb(uint32_t w, uint32_t h, size_t stride) {
    uint8_t *p = (uint8_t *)calloc(stride * h, 1);
    uint32_t x, y;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            p[y * stride + 3 * x + 0] = (uint8_t)(x * 200 / w);
            p[y * stride + 3 * x + 1] = (uint8_t)(y * 200 / h);
            p[y * stride + 3 * x + 2] = (uint8_t)((x + y) % 50 * 4);
        }
    return p;
}

int main(int argc, char **argv) {
    char model[1024], adaptor[1024], path[1024];
    spire_restorer *r = NULL, *r2 = NULL;
    spire_load_options lo;
    spire_restore_params p;
    spire_image *out = NULL, *loaded = NULL;
    spire_image_view in;
    spire_prompt pr;
    char text[256];
    size_t needed = 0;
    uint32_t ow = 0, oh = 0;
    uint8_t *buf;
    int seen = -1;
    const uint32_t W = 21, H = 13;
    const size_t stride = 21 * 3 + 5; /* padded rows */
    uint8_t *pixels;

    if (argc < 3) {
        fprintf(stderr, "usage: %s <fixtures> <scratch>\n", argv[0]);
        return 2;
    }
    snprintf(model, sizeof model, "%s/tiny-sd1", argv[1]);
    snprintf(adaptor, sizeof adaptor, "%s/tiny-spire-adaptor", argv[1]);

    /* Versions and status strings. */
    CHECK(strcmp(spire_version(), SPIRE_VERSION) == 0);
    CHECK(spire_abi_version() == SPIRE_ABI_VERSION);
    CHECK(strcmp(spire_status_str(SPIRE_OK), "ok") == 0);
    CHECK(strcmp(spire_status_str(SPIRE_ERROR_NULL_POINTER), "NULL pointer") == 0);
    CHECK(strcmp(spire_status_str(9999), "unknown status") == 0);
    CHECK(strcmp(spire_status_str(SPIRE_ERROR_NUMERICAL), "numerical error (NaN or infinity)") == 0);

    /* NULL handling. */
    CHECK(spire_restorer_new(NULL, NULL, &r) == SPIRE_ERROR_NULL_POINTER && r == NULL);
    CHECK(strstr(spire_last_error_message(), "model_dir") != NULL);
    CHECK(spire_restorer_new(model, NULL, NULL) == SPIRE_ERROR_NULL_POINTER);
    spire_restorer_free(NULL);
    spire_image_free(NULL);
    spire_load_options_init(NULL);
    spire_restore_params_init(NULL);

    /* Missing model: I/O error naming the path. */
    CHECK(spire_restorer_new("/no/such/model", NULL, &r) == SPIRE_ERROR_IO && r == NULL);
    CHECK(strstr(spire_last_error_message(), "/no/such/model") != NULL);

    /* Load with options. */
    spire_load_options_init(&lo);
    CHECK(lo.struct_size == sizeof(spire_load_options));
    lo.adaptor = adaptor;
    CHECK(spire_restorer_new(model, &lo, &r) == SPIRE_OK && r != NULL);
    CHECK(spire_last_error_message()[0] == '\0');
    lo.device = "tpu";
    CHECK(spire_restorer_new(model, &lo, &r2) == SPIRE_ERROR_DEVICE && r2 == NULL);
    CHECK(strstr(spire_last_error_message(), "tpu") != NULL);
    /* This library is built without the `cuda` feature: the error says how to get it. */
    lo.device = "cuda:0";
    CHECK(spire_restorer_new(model, &lo, &r2) == SPIRE_ERROR_DEVICE && r2 == NULL);
    CHECK(strstr(spire_last_error_message(), "cuda:0") != NULL);
    CHECK(strstr(spire_last_error_message(), "--features cuda") != NULL);
    lo.device = NULL;
    /* A model folder whose scheduler config diffusers saved after swapping in DPM++: Python's
     * json wrote `"lambda_min_clipped": -Infinity` (prepared by scripts/test_c.sh). */
    snprintf(path, sizeof path, "%s/dpm-model", argv[2]);
    CHECK(spire_restorer_new(path, &lo, &r2) == SPIRE_OK && r2 != NULL);
    spire_restorer_free(r2);
    r2 = NULL;
    /* A caller built against the 0.1 header passes the smaller struct (up to `adaptor`): it
     * still loads, and the appended fields read as NULL. */
    {
        spire_load_options old = lo;
        old.struct_size = (uint32_t)offsetof(spire_load_options, config);
        old.config = "/never/read";
        CHECK(spire_restorer_new(model, &old, &r2) == SPIRE_OK && r2 != NULL);
        spire_restorer_free(r2);
        r2 = NULL;
        old.struct_size = (uint32_t)offsetof(spire_load_options, adaptor);
        CHECK(spire_restorer_new(model, &old, &r2) == SPIRE_ERROR_INVALID_ARGUMENT && r2 == NULL);
        /* The 0.2 struct (up to `weight_dtype`): `weight_dtype` is not read. */
        old = lo;
        old.struct_size = (uint32_t)offsetof(spire_load_options, weight_dtype);
        old.weight_dtype = "not-a-dtype";
        CHECK(spire_restorer_new(model, &old, &r2) == SPIRE_OK && r2 != NULL);
        spire_restorer_free(r2);
        r2 = NULL;
    }
    /* Weights kept in half size (f32 arithmetic), and a bad name refused naming the field. */
    {
        spire_load_options half = lo;
        half.weight_dtype = "float16";
        CHECK(spire_restorer_new(model, &half, &r2) == SPIRE_OK && r2 != NULL);
        spire_restorer_free(r2);
        r2 = NULL;
        half.weight_dtype = "int8";
        CHECK(spire_restorer_new(model, &half, &r2) == SPIRE_ERROR_INVALID_ARGUMENT && r2 == NULL);
        CHECK(strstr(spire_last_error_message(), "int8") != NULL);
        CHECK(strstr(spire_last_error_message(), "weight_dtype") != NULL);
    }

    /* A single-file SD checkpoint (original ldm layout) with a single-file ControlNet and a
     * config folder holding its tokenizer. */
    {
        char ckpt[1024], cn[1024], cfg[1024];
        spire_load_options so;
        spire_load_options_init(&so);
        snprintf(ckpt, sizeof ckpt, "%s/single-file/tiny-sd1.safetensors", argv[1]);
        snprintf(cn, sizeof cn, "%s/single-file/tiny-controlnet.safetensors", argv[1]);
        snprintf(cfg, sizeof cfg, "%s/single-file/sd1-config", argv[1]);
        so.adaptor = cn;
        so.config = cfg;
        so.prediction_type = "epsilon";
        CHECK(spire_restorer_load_single_file(ckpt, &so, &r2) == SPIRE_OK && r2 != NULL);
        spire_restorer_free(r2);
        r2 = NULL;
        CHECK(spire_restorer_load_single_file(NULL, &so, &r2) == SPIRE_ERROR_NULL_POINTER && r2 == NULL);
        CHECK(spire_restorer_load_single_file(ckpt, NULL, &r2) == SPIRE_ERROR_NULL_POINTER);
        CHECK(spire_restorer_load_single_file(ckpt, &so, NULL) == SPIRE_ERROR_NULL_POINTER);
        so.prediction_type = "x0";
        CHECK(spire_restorer_load_single_file(ckpt, &so, &r2) == SPIRE_ERROR_INVALID_ARGUMENT && r2 == NULL);
        CHECK(strstr(spire_last_error_message(), "prediction_type") != NULL);
        so.prediction_type = NULL;
        /* A pickle is refused, naming the file and the conversion. */
        snprintf(path, sizeof path, "%s/model.ckpt", argv[2]);
        {
            FILE *f = fopen(path, "wb");
            CHECK(f != NULL);
            if (f) {
                fputs("PK\003\004 not a zip", f);
                fclose(f);
            }
        }
        CHECK(spire_restorer_load_single_file(path, &so, &r2) == SPIRE_ERROR_MODEL_LOAD && r2 == NULL);
        CHECK(strstr(spire_last_error_message(), "model.ckpt") != NULL);
        CHECK(strstr(spire_last_error_message(), "pickle") != NULL);
    }

    /* Restore a strided RGB8 image. */
    pixels = make_rgb(W, H, stride);
    in.width = W;
    in.height = H;
    in.stride = stride;
    in.format = SPIRE_PIXEL_RGB8;
    in.data = pixels;
    spire_restore_params_init(&p);
    CHECK(p.struct_size == sizeof(spire_restore_params));
    CHECK(p.num_inference_steps == 20 && p.scheduler == SPIRE_SCHEDULER_DPMPP_2M);
    /* This model's spire.json recommends nothing: its defaults are the library's. */
    memset(&p, 0, sizeof p);
    CHECK(spire_restorer_default_params(r, &p) == SPIRE_OK);
    CHECK(p.struct_size == sizeof(spire_restore_params) && p.num_inference_steps == 20 && p.strength == 1.0);
    CHECK(p.consistency == 0.0 && p.match_noise == 1);
    CHECK(spire_restorer_default_params(NULL, &p) == SPIRE_ERROR_NULL_POINTER);
    CHECK(spire_restorer_default_params(r, NULL) == SPIRE_ERROR_NULL_POINTER);
    p.num_inference_steps = 2;
    p.restoration_prompt = "Upsample with scale 2; Denoise with sigma 0.1";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_OK);
    CHECK(out != NULL && out->width == 2 * W && out->height == 2 * H && out->stride == 2 * W * 3);
    CHECK(out->format == SPIRE_PIXEL_RGB8);

    /* Same params through restore_into: query, too small, then exact. */
    CHECK(spire_restorer_restore_into(r, &in, &p, NULL, NULL, NULL, 0, &needed, &ow, &oh) ==
          SPIRE_ERROR_BUFFER_TOO_SMALL);
    CHECK(needed == (size_t)out->stride * out->height && ow == out->width && oh == out->height);
    buf = (uint8_t *)malloc(needed);
    CHECK(spire_restorer_restore_into(r, &in, &p, NULL, NULL, buf, needed - 1, &needed, NULL, NULL) ==
          SPIRE_ERROR_BUFFER_TOO_SMALL);
    CHECK(spire_restorer_restore_into(r, &in, &p, NULL, NULL, buf, needed, NULL, NULL, NULL) == SPIRE_OK);
    CHECK(memcmp(buf, out->data, needed) == 0);
    free(buf);
    spire_image_free(out);
    out = NULL;

    /* Strided BGR8 in, BGR8 out; 16-bit from an odd (unaligned) address, 16-bit out. */
    {
        spire_image_view v = in;
        spire_image *o2 = NULL;
        size_t i, n16 = (size_t)W * H * 3;
        uint8_t *raw16 = (uint8_t *)malloc(n16 * 2 + 1);
        v.format = SPIRE_PIXEL_BGR8;
        CHECK(spire_restorer_restore(r, &v, &p, NULL, NULL, &o2) == SPIRE_OK);
        CHECK(o2 != NULL && o2->format == SPIRE_PIXEL_BGR8 && o2->width == 2 * W);
        CHECK(((uintptr_t)o2->data % 16) == 0);
        spire_image_free(o2);
        o2 = NULL;
        for (i = 0; i < n16; i++) {
            uint16_t s16 = (uint16_t)(i * 2654435761u >> 16);
            memcpy(raw16 + 1 + 2 * i, &s16, 2);
        }
        v.stride = (size_t)W * 6;
        v.format = SPIRE_PIXEL_RGB16;
        v.data = raw16 + 1;
        CHECK(spire_restorer_restore(r, &v, &p, NULL, NULL, &o2) == SPIRE_OK);
        CHECK(o2 != NULL && o2->format == SPIRE_PIXEL_RGB16 && o2->stride == (size_t)o2->width * 6);
        spire_image_free(o2);
        free(raw16);
    }

    /* "auto": the prompt estimated from the image, given clauses kept (the scale here). */
    p.restoration_prompt = "auto; Upsample with scale 2";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_OK);
    CHECK(out != NULL && out->width == 2 * W && out->height == 2 * H);
    spire_image_free(out);
    out = NULL;
    p.restoration_prompt = "Upsample with scale 2; Denoise with sigma 0.1";

    /* upsample_input = 0: the input is already the output's size (a degraded image resized
       back); restore and restore_into agree on the size, which is the input's. */
    p.upsample_input = 0;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_OK);
    CHECK(out != NULL && out->width == W && out->height == H);
    CHECK(spire_restorer_restore_into(r, &in, &p, NULL, NULL, NULL, 0, &needed, &ow, &oh) ==
          SPIRE_ERROR_BUFFER_TOO_SMALL);
    CHECK(needed == (size_t)W * H * 3 && ow == W && oh == H);
    buf = (uint8_t *)malloc(needed);
    CHECK(spire_restorer_restore_into(r, &in, &p, NULL, NULL, buf, needed, NULL, NULL, NULL) == SPIRE_OK);
    CHECK(memcmp(buf, out->data, needed) == 0);
    free(buf);
    spire_image_free(out);
    out = NULL;
    p.upsample_input = 2;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "upsample_input") != NULL);
    p.upsample_input = 1;
    p.verbatim_restoration_prompt = "a sharp photo";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "verbatim_restoration_prompt") != NULL);
    p.verbatim_restoration_prompt = NULL;

    /* Any option by name through `options` (here DDIM with eta, and the input taken as the
       output's size); unknown names and malformed pairs are named errors. */
    p.options = "scheduler=ddim; eta=0.5\nupsample_input=false";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_OK);
    CHECK(out != NULL && out->width == W && out->height == H);
    spire_image_free(out);
    out = NULL;
    p.options = "stenght=0.5";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "stenght") != NULL && strstr(spire_last_error_message(), "strength") != NULL);
    p.options = "eta";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "options") != NULL);
    p.options = NULL;

    /* Bad sizes, strides and formats. */
    in.stride = 3; /* smaller than a row */
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_IMAGE && out == NULL);
    in.stride = stride;
    in.width = 1;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_IMAGE);
    in.width = W;
    in.format = 77;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_IMAGE);
    in.format = SPIRE_PIXEL_RGB8;
    in.data = NULL;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_NULL_POINTER);
    in.data = pixels;
    CHECK(spire_restorer_restore(r, NULL, &p, NULL, NULL, &out) == SPIRE_ERROR_NULL_POINTER);
    CHECK(spire_restorer_restore(NULL, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_NULL_POINTER);

    /* Bad options. */
    p.restoration_prompt = "Sharpen with sigma 2";
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "Sharpen with sigma 2") != NULL);
    p.restoration_prompt = NULL;
    p.strength = 0.0;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "strength") != NULL);
    p.strength = 1.0;
    p.consistency = -0.5;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "consistency") != NULL);
    p.consistency = 0.0;
    p.match_noise = 2;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(spire_last_error_message(), "match_noise") != NULL);
    p.match_noise = 1;
    p.struct_size = 4;
    CHECK(spire_restorer_restore(r, &in, &p, NULL, NULL, &out) == SPIRE_ERROR_INVALID_ARGUMENT);
    spire_restore_params_init(&p);

    /* Cancellation within one step. */
    p.num_inference_steps = 10;
    CHECK(spire_restorer_restore(r, &in, &p, cancel_after_two, &seen, &out) == SPIRE_ERROR_CANCELLED);
    CHECK(out == NULL && seen == 2 && calls == 3);

    /* Clones share the model. */
    CHECK(spire_restorer_clone(r, &r2) == SPIRE_OK && spire_restorer_shares_model(r, r2) == 1);
    spire_restorer_free(r2);
    CHECK(spire_restorer_clone(NULL, &r2) == SPIRE_ERROR_NULL_POINTER && r2 == NULL);
    CHECK(spire_restorer_clone(r, &r2) == SPIRE_OK);

    /* Prompts. */
    CHECK(spire_prompt_parse("upsample 4x, denoise .08", &pr) == SPIRE_OK);
    CHECK(pr.upsample_scale == 4.0f && pr.dejpeg_quality == 0 && pr.deblur_sigma == 0.0f);
    CHECK(spire_prompt_render(&pr, NULL, 0, &needed) == SPIRE_ERROR_BUFFER_TOO_SMALL);
    CHECK(needed == strlen("Upsample with scale 4.0; Denoise with sigma 0.08") + 1);
    CHECK(spire_prompt_render(&pr, text, sizeof text, NULL) == SPIRE_OK);
    CHECK(strcmp(text, "Upsample with scale 4.0; Denoise with sigma 0.08") == 0);
    CHECK(spire_prompt_parse("Deblur with sigma 99", &pr) == SPIRE_ERROR_INVALID_ARGUMENT);
    CHECK(spire_prompt_parse(NULL, &pr) == SPIRE_ERROR_NULL_POINTER);
    CHECK(spire_prompt_parse("Remove all degradation", &pr) == SPIRE_OK && pr.denoise_sigma == 0.0f);

    /* The prompt read from a photo: exact from a JPEG file's tables; "auto" restores. */
    snprintf(path, sizeof path, "%s/jpeg/q50.jpg", argv[1]);
    CHECK(spire_prompt_estimate(path, NULL, &pr) == SPIRE_OK && pr.dejpeg_quality == 50);
    CHECK(pr.denoise_sigma == 0.0f && pr.deblur_sigma == 0.0f && pr.upsample_scale == 0.0f);
    CHECK(spire_prompt_estimate(NULL, NULL, &pr) == SPIRE_ERROR_NULL_POINTER);
    CHECK(spire_prompt_estimate(path, NULL, NULL) == SPIRE_ERROR_NULL_POINTER);
    snprintf(path, sizeof path, "%s/jpeg/missing.jpg", argv[1]);
    CHECK(spire_prompt_estimate(path, NULL, &pr) == SPIRE_ERROR_IO);
    CHECK(spire_prompt_estimate(NULL, &in, &pr) == SPIRE_OK);

    /* Degradation and image files. */
    CHECK(spire_degrade(&in, SPIRE_PIPELINE_PARAMETERIZED, 7, &out, &pr) == SPIRE_OK);
    CHECK(out->width == W && out->height == H);
    CHECK(pr.deblur_sigma > 0 || pr.upsample_scale > 0 || pr.denoise_sigma > 0 || pr.dejpeg_quality > 0);
    snprintf(path, sizeof path, "%s/degraded.png", argv[2]);
    {
        spire_image_view v;
        v.width = out->width;
        v.height = out->height;
        v.stride = out->stride;
        v.format = out->format;
        v.data = out->data;
        CHECK(spire_image_save(path, &v) == SPIRE_OK);
        {
            /* The extension picks the format; another one is refused, naming the path. */
            char tif[1100];
            snprintf(tif, sizeof tif, "%s/degraded.bmp", argv[2]);
            CHECK(spire_image_save(tif, &v) == SPIRE_ERROR_INVALID_ARGUMENT);
            CHECK(strstr(spire_last_error_message(), "degraded.bmp") != NULL);
        }
    }
    CHECK(spire_image_load(path, &loaded) == SPIRE_OK);
    CHECK(loaded->width == out->width && memcmp(loaded->data, out->data, out->stride * out->height) == 0);
    spire_image_free(loaded);
    spire_image_free(out);
    CHECK(spire_image_load("/no/such/file.png", &loaded) == SPIRE_ERROR_IO && loaded == NULL);
    CHECK(spire_degrade(&in, 5, 7, &out, NULL) == SPIRE_ERROR_INVALID_ARGUMENT && out == NULL);

    spire_restorer_free(r2);
    spire_restorer_free(r);
    free(pixels);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_capi: all checks passed\n");
    return 0;
}
