/* Where the files cvmd ships beside its binary are: installed under PREFIX
 * (PREFIX/libexec/cvmd, PREFIX/share/cvmd), or in the build tree it runs from. */
#pragma once

/* Returns a new string: DIR/installed if that exists, where DIR is the
 * directory of the running cvmd, else DIR/built (which a caller's open then
 * reports as missing, by name). NULL only when out of memory. */
char *cvm_path_shipped(const char *installed, const char *built);

/* The guest agent the sim host runs, and the default firmware of launch images. */
#define CVM_PATH_AGENT "../libexec/cvmd/cvm-agent", "cvm-agent"
#define CVM_PATH_VERIFIER "../share/cvmd/verifier.bin", "firmware/verifier.bin"
