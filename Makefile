# SPDX-License-Identifier: MIT
#
# Build nv-kthread-q.ko against an installed kernel tree.
#
#   make                             build for the running kernel
#   make KERNELRELEASE=6.12.x-amd64  build for another installed kernel
#   make KDIR=/path/to/kernel/tree   build against any prepared tree
#   make install                     modules_install, then depmod
#   make check                       checkpatch, kernel-doc, sparse and W=1
#   make clean

KERNELRELEASE ?= $(shell uname -r)
KDIR ?= /lib/modules/$(KERNELRELEASE)/build

# Distro kernels must be extended with the compiler they were built with
# (Debian's 6.12 uses x86_64-linux-gnu-gcc-12, not plain gcc). The kernel
# records it in CONFIG_CC_VERSION_TEXT; take its first word unless the
# caller set CC.
ifeq ($(origin CC),default)
KERNEL_CC := $(shell sed -n 's/^CONFIG_CC_VERSION_TEXT="\{0,1\}\([^ "]*\).*/\1/p' \
		$(KDIR)/include/config/auto.conf 2>/dev/null)
CC := $(if $(KERNEL_CC),$(KERNEL_CC),gcc)
endif

KBUILD := $(MAKE) -C $(KDIR) M=$(CURDIR) CC=$(CC)

all: modules

check-kdir:
	@test -f $(KDIR)/Makefile || { \
		echo "error: no kernel build tree at $(KDIR)." >&2; \
		echo "Install the headers of that kernel (on Debian: apt-get install linux-headers-$(KERNELRELEASE))" >&2; \
		echo "or pass KERNELRELEASE= or KDIR=." >&2; exit 1; }
	@command -v $(CC) >/dev/null || { \
		echo "error: compiler '$(CC)' not found; this kernel was built with it." >&2; \
		echo "Install it (on Debian: apt-get install gcc-12) or pass CC=." >&2; exit 1; }

modules: check-kdir
	$(KBUILD) modules

install: modules
	$(KBUILD) modules_install
	depmod -a $(KERNELRELEASE)

check:
	tests/static-checks.sh $(KERNELRELEASE)

# Works without a kernel tree too, e.g. after the headers were removed.
clean:
	@if [ -f $(KDIR)/Makefile ]; then $(KBUILD) clean; else \
		rm -rf *.o .*.o .*.d *.ko *.mod *.mod.c .*.cmd Module.symvers \
			modules.order .tmp_versions; fi

.PHONY: all check-kdir modules install check clean
