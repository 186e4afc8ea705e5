/* Where the files cvmd ships beside its binaries are: installed under PREFIX
 * (PREFIX/libexec/cvmd, PREFIX/share/cvmd), or in the build tree they run from. */
#pragma once

/* Returns a new string: DIR/installed if that exists, where DIR is the
 * directory of the running program, else built in DIR or in one of its
 * three parents (the build tree, or the source tree above it), else
 * DIR/built, which a caller's open then reports as missing, by name. NULL
 * only when out of memory. */
char *cvm_path_shipped(const char *installed, const char *built);

/* The guest agent the sim host runs, the default firmware of launch images,
 * the initrd builder and the guest pieces (`make guest`) `cvmctl image build` uses. */
#define CVM_PATH_AGENT "../libexec/cvmd/cvm-agent", "cvm-agent"
#define CVM_PATH_VERIFIER "../share/cvmd/verifier.bin", "firmware/verifier.bin"
#define CVM_PATH_MKINITRD "../libexec/cvmd/mkinitrd.sh", "firmware/tools/mkinitrd.sh"
#define CVM_PATH_GUEST "../share/cvmd/guest", "guest"
