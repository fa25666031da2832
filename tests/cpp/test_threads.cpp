// C++ test of include/spire.hpp: RAII, exceptions, and 4 threads restoring at once on one
// handle and on cloned handles, all giving the single-threaded result.
// Usage: test_threads <tests/fixtures dir>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <stdexcept>
#include <thread>
#include <vector>

#include "spire.hpp"

static int failures = 0;
#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const std::string fix = argv[1];
    spire_load_options lo;
    spire_load_options_init(&lo);
    const std::string adaptor = fix + "/tiny-spire-adaptor";
    lo.adaptor = adaptor.c_str();
    // The log callback sees the load; an exception it throws is swallowed, not propagated.
    std::vector<std::string> logged;
    spire::set_log_callback([&logged](spire_log_level, const std::string &m) {
        logged.push_back(m);
        throw std::runtime_error("a log function that throws");
    });
    spire::Restorer r(fix + "/tiny-sd1", &lo);
    spire::set_log_callback(nullptr);
    bool saw_load = false;
    for (const auto &m : logged) saw_load = saw_load || m.find("loaded") != std::string::npos;
    CHECK(saw_load);
    spire::set_num_threads(spire_num_threads());  // the count it has: a no-op

    const uint32_t W = 24, H = 16;
    std::vector<uint8_t> px(W * H * 3);
    for (size_t i = 0; i < px.size(); i++) px[i] = uint8_t(i * 37 % 251);
    spire::RestoreParams p;
    p.steps(2).restoration_prompt("Denoise with sigma 0.1").semantic_prompt("a photo").semantic_guidance(2.0);
    spire::RestoreParams copy = p;  // strings survive copies
    const spire::Image want = r.restore(spire::ImageView::rgb8(W, H, px.data()), copy);
    CHECK(want.width() == W && want.height() == H);

    // BGR in, BGR out (the same pixels, red and blue swapped); 16-bit in, 16-bit out.
    {
        std::vector<uint8_t> bgr(px.size());
        for (size_t i = 0; i < px.size(); i += 3) {
            bgr[i] = px[i + 2];
            bgr[i + 1] = px[i + 1];
            bgr[i + 2] = px[i];
        }
        const spire::Image b = r.restore(spire::ImageView::bgr8(W, H, bgr.data()), copy);
        CHECK(b.format() == SPIRE_PIXEL_BGR8);
        bool swapped = true;
        for (size_t i = 0; i < px.size(); i += 3)
            swapped = swapped && b.data()[i] == want.data()[i + 2] && b.data()[i + 2] == want.data()[i];
        CHECK(swapped);
        std::vector<uint16_t> px16(px.size());
        for (size_t i = 0; i < px.size(); i++) px16[i] = uint16_t(px[i] * 257);
        const spire::Image w16 = r.restore(spire::ImageView::rgb16(W, H, px16.data()), copy);
        CHECK(w16.format() == SPIRE_PIXEL_RGB16 && w16.stride() == size_t(W) * 6);
    }

    // eta, upsample_input and any option by name; the by-name string survives copies too.
    {
        spire::RestoreParams q;
        q.num_inference_steps(2).scheduler(SPIRE_SCHEDULER_DDIM).eta(0.5)
            .restoration_prompt("Upsample with scale 2").upsample_input(false).option("seed", "7");
        spire::RestoreParams q2 = q;
        const spire::Image same = r.restore(spire::ImageView::rgb8(W, H, px.data()), q2);
        CHECK(same.width() == W && same.height() == H);
        q.upsample_input(true);
        const spire::Image big = r.restore(spire::ImageView::rgb8(W, H, px.data()), q);
        CHECK(big.width() == 2 * W && big.height() == 2 * H);
        bool threw = false;
        try {
            spire::RestoreParams bad;
            bad.option("stenght", "0.5");
            r.restore(spire::ImageView::rgb8(W, H, px.data()), bad);
        } catch (const spire::Error &e) {
            threw = std::string(e.what()).find("stenght") != std::string::npos;
        }
        CHECK(threw);
    }

    // An exception thrown in the progress callback reaches the caller as itself, not as
    // "cancelled", after the run stopped within a step.
    {
        struct Stop : std::runtime_error {
            using std::runtime_error::runtime_error;
        };
        spire::RestoreParams q;
        q.num_inference_steps(6);
        int calls = 0;
        bool caught = false;
        try {
            r.restore(spire::ImageView::rgb8(W, H, px.data()), q, [&](uint32_t step, uint32_t) -> bool {
                calls++;
                if (step == 2) throw Stop("stop at step 2");
                return true;
            });
        } catch (const Stop &e) {
            caught = std::string(e.what()) == "stop at step 2";
        } catch (...) {
        }
        CHECK(caught && calls == 3);
    }

    // 4 threads on one handle, 4 on clones.
    for (int mode = 0; mode < 2; mode++) {
        std::vector<spire::Restorer> handles;
        for (int t = 0; t < 4; t++) handles.push_back(r);  // copies are clones
        std::atomic<int> same{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++) {
            threads.emplace_back([&, t] {
                const spire::Restorer &h = mode == 0 ? r : handles[t];
                spire::Image got = h.restore(spire::ImageView::rgb8(W, H, px.data()), p);
                bool eq = got.width() == want.width() && got.height() == want.height();
                for (size_t i = 0; eq && i < size_t(got.stride()) * got.height(); i++)
                    eq = got.data()[i] == want.data()[i];
                if (eq) same++;
            });
        }
        for (auto &th : threads) th.join();
        CHECK(same == 4);
        for (auto &h : handles) CHECK(h.shares_model_with(r));
    }

    // Errors become exceptions with the status and message.
    try {
        spire::Restorer bad("/no/such/model");
        CHECK(false);
    } catch (const spire::Error &e) {
        CHECK(e.status() == SPIRE_ERROR_IO);
        CHECK(std::string(e.what()).find("/no/such/model") != std::string::npos);
    }
    try {
        spire::RestoreParams q;
        q.restoration_prompt("Sharpen with sigma 3");
        r.restore(spire::ImageView::rgb8(W, H, px.data()), q);
        CHECK(false);
    } catch (const spire::Error &e) {
        CHECK(e.status() == SPIRE_ERROR_INVALID_ARGUMENT);
    }
    // Progress and cancellation through std::function.
    int steps = 0;
    try {
        spire::RestoreParams q;
        q.steps(8);
        r.restore(spire::ImageView::rgb8(W, H, px.data()), q, [&](uint32_t s, uint32_t) {
            steps++;
            return s < 3;
        });
        CHECK(false);
    } catch (const spire::Error &e) {
        CHECK(e.status() == SPIRE_ERROR_CANCELLED);
        CHECK(steps == 4);
    }
    // Cancellation from another thread: a restore of 200 steps runs on a worker; the main
    // thread raises a flag once it has started, and the worker's callback returns it.
    {
        std::atomic<bool> stop{false};
        std::atomic<int> seen{0};
        std::atomic<int> status{-1};
        std::thread worker([&] {
            try {
                spire::RestoreParams q;
                q.steps(200);
                r.restore(spire::ImageView::rgb8(W, H, px.data()), q, [&](uint32_t, uint32_t) {
                    seen++;
                    return !stop.load();
                });
                status = SPIRE_OK;
            } catch (const spire::Error &e) {
                status = e.status();
            }
        });
        while (seen.load() < 2) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        stop = true;
        worker.join();
        if (status.load() != SPIRE_ERROR_CANCELLED) std::fprintf(stderr, "status %d seen %d: %s\n", status.load(), seen.load(), spire_last_error_message());
        CHECK(status.load() == SPIRE_ERROR_CANCELLED);
        CHECK(seen.load() < 200);
    }
    CHECK(spire::canonical_prompt("denoise .1, upsample 2x") == "Upsample with scale 2.0; Denoise with sigma 0.10");

    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("test_threads: all checks passed\n");
    return 0;
}
