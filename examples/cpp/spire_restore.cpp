// spire-restore: restore a photo from the command line with libspire.
//
//   spire-restore <model-dir|builtin> in.png out.png ["restoration prompt"] ["semantic prompt"] [steps]
//
// e.g. spire-restore models/my-spire noisy.png clean.png "Denoise with sigma 0.1" "a cat" 20
//      spire-restore builtin noisy.png clean.png auto      (the built-in model; prompt read from the photo)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "spire.hpp"

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr,
                     "usage: %s <model-dir|builtin> <in.png> <out.png> [restoration prompt] [semantic prompt] [steps]\n",
                     argv[0]);
        return 2;
    }
    try {
        spire::Restorer restorer =
            std::string(argv[1]) == "builtin" ? spire::Restorer::builtin() : spire::Restorer(argv[1]);
        spire::Image input = spire::Image::load(argv[2]);
        spire::RestoreParams params = restorer.default_params();
        if (argc > 4) params.restoration_prompt(argv[4]);
        if (argc > 5) params.semantic_prompt(argv[5]);
        if (argc > 6) params.steps(static_cast<uint32_t>(std::strtoul(argv[6], nullptr, 10)));
        spire::Image out = restorer.restore(input.view(), params, [](uint32_t step, uint32_t total) {
            std::fprintf(stderr, "\rstep %u/%u", step, total);
            return true;
        });
        std::fprintf(stderr, "\n");
        out.save(argv[3]);
        std::printf("%s: %ux%u -> %s: %ux%u\n", argv[2], input.width(), input.height(), argv[3], out.width(),
                    out.height());
        return 0;
    } catch (const spire::Error &e) {
        std::fprintf(stderr, "spire-restore: %s\n", e.what());
        return 1;
    }
}
