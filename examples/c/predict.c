/* predict: load a signed edgefleet bundle through the C ABI and predict one .npy input.
 *
 *   predict BUNDLE.efb TRUST.cbor ROOT.pub INPUT.npy [REPEAT]
 *
 * INPUT.npy holds little-endian float32 ('<f4', C order), shaped like the model's input with the
 * batch first (e.g. 1x1x8x8 for the digits bundle). Prints the JSON answer on stdout, then one
 * line per raw output ("output NAME [d0,d1,...] v0 v1 ..."); on failure prints the library's
 * message on stderr and exits with the EdgeStatus code. With REPEAT, it then predicts REPEAT more
 * times from an input buffer it fills in place (edge_input_buffer_new / edge_predict_buffers) and
 * prints the median latency the library measured ("median_latency_ms X over N ...") on stderr: a
 * quick speed check on a board.
 *
 * Build (host):     cc -O2 -I runtime/include examples/c/predict.c -L target/release -ledgefleet -o predict
 * Build (aarch64):  see cross/build.sh, which builds this example for the target too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_runtime.h"

/* Reads a version 1/2 .npy file of '<f4' in C order. Returns 0 on success. */
static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int read_npy_f32(const char *path, float **data, size_t *shape, size_t *rank) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    unsigned char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "%s: not a .npy file\n", path); fclose(f); return -1;
    }
    size_t header_len;
    if (magic[6] == 1) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) { fclose(f); return -1; }
        header_len = b[0] | (b[1] << 8);
    } else {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) { fclose(f); return -1; }
        header_len = b[0] | (b[1] << 8) | ((size_t)b[2] << 16) | ((size_t)b[3] << 24);
    }
    char *header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, f) != header_len) { free(header); fclose(f); return -1; }
    if (!strstr(header, "'<f4'") || strstr(header, "'fortran_order': True")) {
        fprintf(stderr, "%s: need little-endian float32 in C order, header is %s\n", path, header);
        free(header); fclose(f); return -1;
    }
    char *p = strstr(header, "'shape': (");
    if (!p) { free(header); fclose(f); return -1; }
    p += strlen("'shape': (");
    size_t count = 1;
    *rank = 0;
    while (*p && *p != ')' && *rank < 8) {
        char *end;
        unsigned long d = strtoul(p, &end, 10);
        if (end == p) break;
        shape[(*rank)++] = d;
        count *= d;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    free(header);
    *data = malloc(count * sizeof(float) + 1);
    if (!*data || fread(*data, sizeof(float), count, f) != count) {
        fprintf(stderr, "%s: fewer elements than its shape says\n", path);
        fclose(f); return -1;
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s BUNDLE.efb TRUST.cbor ROOT.pub INPUT.npy [REPEAT]\n", argv[0]);
        return 2;
    }
    long repeat = argc == 6 ? strtol(argv[5], NULL, 10) : 0;
    if (repeat < 0 || repeat > 1000000) {
        fprintf(stderr, "REPEAT must be 0..1000000\n");
        return 2;
    }
    float *pixels = NULL;
    size_t shape[8];
    size_t rank = 0;
    if (read_npy_f32(argv[4], &pixels, shape, &rank) != 0) return 2;

    EdgeModel *model = NULL;
    EdgeStatus status = edge_model_load_files(argv[1], argv[2], argv[3], &model);
    if (status != EDGE_OK) {
        fprintf(stderr, "load failed (%d): %s\n", (int)status, edge_last_error());
        free(pixels);
        return (int)status;
    }

    EdgeTensorView input = {EDGE_DTYPE_F32, pixels, shape, rank};
    EdgeAnswer *answer = NULL;
    status = edge_predict(model, &input, 1, &answer);
    if (status != EDGE_OK) {
        fprintf(stderr, "predict failed (%d): %s\n", (int)status, edge_last_error());
        edge_model_free(model);
        free(pixels);
        return (int)status;
    }
    printf("%s\n", edge_answer_json(answer));
    for (size_t i = 0; i < edge_answer_output_count(answer); i++) {
        EdgeOutputView out;
        if (edge_answer_output(answer, i, &out) != EDGE_OK) continue;
        printf("output %s [", out.name);
        for (size_t d = 0; d < out.rank; d++) printf(d ? ",%zu" : "%zu", out.shape[d]);
        printf("]");
        for (size_t k = 0; k < out.len; k++) printf(" %.9g", out.data[k]);
        printf("\n");
    }
    edge_answer_free(answer);

    if (repeat > 0) {
        /* The loop an app runs: borrow one input buffer from the library, write each new input
         * straight into it (here: the same pixels again; a camera would decode its frame there),
         * predict from it. No copy of the input on the way to the engine; on the cuda engine the
         * buffer is pinned, device-mapped memory. */
        EdgeInputBuffer *buffer = NULL;
        if (edge_input_buffer_new(model, 0, shape, rank, &buffer) != EDGE_OK) {
            fprintf(stderr, "input buffer: %s\n", edge_last_error());
            return 1;
        }
        size_t bytes = 0;
        float *frame = edge_input_buffer_data(buffer, &bytes);
        double *latencies = malloc((size_t)repeat * sizeof(double));
        if (!latencies || !frame) return 2;
        for (long i = 0; i < repeat; i++) {
            memcpy(frame, pixels, bytes);
            if (edge_predict_buffers(model, &buffer, 1, &answer) != EDGE_OK) {
                fprintf(stderr, "predict failed: %s\n", edge_last_error());
                return 1;
            }
            latencies[i] = edge_answer_latency_ms(answer);
            edge_answer_free(answer);
        }
        qsort(latencies, (size_t)repeat, sizeof(double), compare_doubles);
        fprintf(stderr, "median_latency_ms %.4f over %ld (input buffer, pinned: %d)\n",
                latencies[repeat / 2], repeat, edge_input_buffer_pinned(buffer));
        free(latencies);
        edge_input_buffer_free(buffer);
    }

    char *stats = NULL;
    if (edge_model_stats_json(model, &stats) == EDGE_OK) {
        fprintf(stderr, "stats: %s\n", stats);
        edge_string_free(stats);
    }
    edge_model_free(model);
    free(pixels);
    return 0;
}
