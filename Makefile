# SPDX-License-Identifier: MIT
#
# Build nv-kthread-q.ko against an installed kernel tree.
#
#   make                             build for the running kernel
#   make KERNELRELEASE=6.12.x-amd64  build for another installed kernel
#   make KDIR=/path/to/kernel/tree   build against any prepared tree
#   make install                     modules_install, depmod, and the
#                                    headers and Module.symvers for
#                                    consumers in NVQ_DEVEL_DIR
#   make sign                        sign with SIGN_KEY and SIGN_CERT
#   make dkms-install                install through DKMS for KERNELRELEASE
#   make dkms-remove                 remove from DKMS, for all kernels
#   make check                       checkpatch, kernel-doc, sparse and W=1
#   make clean
#
# DESTDIR is honoured by install.

KERNELRELEASE ?= $(shell uname -r)
KDIR ?= /lib/modules/$(KERNELRELEASE)/build

# Distro kernels must be extended with the compiler they were built with
# (Debian's 6.12 uses x86_64-linux-gnu-gcc-12, not plain gcc). The kernel
# records it in CONFIG_CC_VERSION_TEXT; take its first word unless the
# caller set CC. An empty CC from the environment counts as unset.
ifeq ($(origin CC)$(strip $(CC)),environment)
CC :=
endif
ifneq ($(filter default,$(origin CC))$(if $(strip $(CC)),,empty),)
KERNEL_CC := $(shell sed -n 's/^CONFIG_CC_VERSION_TEXT="\{0,1\}\([^ "]*\).*/\1/p' \
		$(KDIR)/include/config/auto.conf 2>/dev/null)
CC := $(if $(KERNEL_CC),$(KERNEL_CC),gcc)
endif

KBUILD := $(MAKE) -C $(KDIR) M=$(CURDIR) CC=$(CC)

NVQ_VERSION := $(shell sed -n 's/^NV_KTHREAD_Q_VERSION ?= //p' $(CURDIR)/Kbuild)

# Headers and Module.symvers, for modules built later against this one.
NVQ_DEVEL_DIR ?= /usr/lib/nv-kthread-q/$(KERNELRELEASE)

# DKMS 3.0.10 creates this key pair on its first build and signs with it.
SIGN_KEY ?= /var/lib/dkms/mok.key
SIGN_CERT ?= /var/lib/dkms/mok.pub
SIGN_HASH ?= $(shell sed -n 's/^CONFIG_MODULE_SIG_HASH="\{0,1\}\([^"]*\).*/\1/p' \
		$(KDIR)/include/config/auto.conf 2>/dev/null)

# DKMS runs make itself; flags inherited from this make break its build.
DKMS := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dkms

DKMS_SRC := /usr/src/nv-kthread-q-$(NVQ_VERSION)
DKMS_FILES := Makefile Kbuild dkms.conf LICENSE nv-kthread-q.h \
	nv-kthread-q-os.h nv-kthread-q.c nv-kthread-q-selftest.c

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
	$(KBUILD) INSTALL_MOD_PATH=$(DESTDIR) modules_install
	install -d $(DESTDIR)$(NVQ_DEVEL_DIR)
	install -m 0644 nv-kthread-q.h nv-kthread-q-os.h Module.symvers \
		$(DESTDIR)$(NVQ_DEVEL_DIR)/
	depmod -a $(if $(DESTDIR),-b $(DESTDIR)) $(KERNELRELEASE)

sign: modules
	@test -r $(SIGN_KEY) -a -r $(SIGN_CERT) || { \
		echo "error: no signing key $(SIGN_KEY) or certificate $(SIGN_CERT)." >&2; \
		echo "Pass SIGN_KEY= and SIGN_CERT=, or run a DKMS build once to create them." >&2; \
		exit 1; }
	@if tail -c 28 nv-kthread-q.ko | grep -q 'Module signature appended'; then \
		echo "nv-kthread-q.ko is already signed; run make clean first to sign it again"; \
	else \
		echo "signing nv-kthread-q.ko with $(SIGN_KEY)"; \
		$(KDIR)/scripts/sign-file $(or $(SIGN_HASH),sha256) $(SIGN_KEY) \
			$(SIGN_CERT) nv-kthread-q.ko; \
	fi

dkms-install:
	@command -v dkms >/dev/null || { \
		echo "error: dkms not found (on Debian: apt-get install dkms)" >&2; exit 1; }
	install -d $(DKMS_SRC)
	install -m 0644 $(DKMS_FILES) $(DKMS_SRC)/
	$(DKMS) status -m nv-kthread-q -v $(NVQ_VERSION) | grep -q . || \
		$(DKMS) add -m nv-kthread-q -v $(NVQ_VERSION)
	$(DKMS) build -m nv-kthread-q -v $(NVQ_VERSION) -k $(KERNELRELEASE)
	$(DKMS) install -m nv-kthread-q -v $(NVQ_VERSION) -k $(KERNELRELEASE)

dkms-remove:
	-$(DKMS) remove -m nv-kthread-q -v $(NVQ_VERSION) --all
	rm -rf $(DKMS_SRC)

check:
	tests/static-checks.sh $(KERNELRELEASE)

# Works without a kernel tree too, e.g. after the headers were removed.
clean:
	@if [ -f $(KDIR)/Makefile ]; then $(KBUILD) clean; else \
		rm -rf *.o .*.o .*.d *.ko *.mod *.mod.c .*.cmd Module.symvers \
			modules.order .tmp_versions; fi

.PHONY: all check-kdir modules install sign dkms-install dkms-remove check clean
