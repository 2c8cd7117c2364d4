/*
 * pcprof.c: a qemu-user (7.2, plugin API v1) plugin that counts executions of every translation
 * block, for a per-function profile of executed instructions (see bench/pcprof.sh).
 * Args: out=FILE. Output: one line per executed block, "vaddr insns executions symbol".
 * Inline adds only; counters are not atomic: profile single-threaded runs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t vaddr, insns, executions;
    char *symbol;
} Block;

static GPtrArray *blocks;
static char *out_path;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    Block *b = g_new0(Block, 1);
    const char *symbol = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0));
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    b->symbol = g_strdup(symbol ? symbol : "?");
    g_ptr_array_add(blocks, b);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executions, 1);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    FILE *f = out_path ? fopen(out_path, "w") : stderr;
    if (!f) return;
    for (guint i = 0; i < blocks->len; i++) {
        Block *b = blocks->pdata[i];
        if (b->executions)
            fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 " %s\n", b->vaddr, b->insns, b->executions,
                    b->symbol);
    }
    if (f != stderr) fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) out_path = g_strdup(argv[i] + 4);
        else { fprintf(stderr, "pcprof: unknown argument %s (use out=FILE)\n", argv[i]); return -1; }
    }
    blocks = g_ptr_array_new();
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
