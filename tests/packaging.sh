# shellcheck shell=bash
#
# Host-side checks of how users install the module and build against it:
# make install with the files consumers need, make sign, and the DKMS
# cycle. Sourced by run-tests.sh. Nothing here loads a module into the host
# kernel; the VM steps load what DKMS installed.
#
# DKMS installs into /lib/modules/<release>/updates/dkms of this machine.
# nvq_dkms_remove_all undoes it, and run-tests.sh calls it on exit.

# Read by run-tests.sh, which installs them. DKMS creates its signing key
# with openssl, which the dkms package does not depend on.
# shellcheck disable=SC2034
NVQ_PACKAGING_PACKAGES=(dkms openssl xz-utils)

NVQ_DKMS_NAME=nv-kthread-q

nvq_dkms_version() {
	sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$NVQ_SRC_DIR/dkms.conf"
}

# Run a make target of the repository's Makefile for RELEASE in a fresh
# copy of the sources, so that the work tree stays clean.
nvq_make_in_copy() {
	local copy=$1 release=$2
	shift 2

	rm -rf "$copy"
	mkdir -p "$copy"
	cp -r "$NVQ_SRC_DIR"/{Makefile,Kbuild,dkms.conf,LICENSE,examples} "$NVQ_SRC_DIR"/*.c "$NVQ_SRC_DIR"/*.h "$copy/"
	make -C "$copy" KERNELRELEASE="$release" "$@"
}

# Check that the version in dkms.conf is the one that Kbuild builds in.
nvq_check_versions_match() {
	local kbuild_version dkms_version

	kbuild_version=$(sed -n 's/^NV_KTHREAD_Q_VERSION ?= //p' "$NVQ_SRC_DIR/Kbuild")
	dkms_version=$(nvq_dkms_version)
	if [[ -z $kbuild_version || $kbuild_version != "$dkms_version" ]]; then
		echo "Kbuild has version '$kbuild_version', dkms.conf has '$dkms_version'"
		return 1
	fi
}

# Check that make install into DESTDIR puts the module, the headers and
# Module.symvers in place, and that the example consumer builds against
# the installed files alone.
nvq_check_install_and_consumer_build() {
	local release=$1
	local work=$NVQ_CACHE/packaging/$release
	local destdir=$work/destdir
	local devel=$destdir/usr/lib/nv-kthread-q/$release
	local file

	mkdir -p "$work"
	if ! nvq_make_in_copy "$work/src" "$release" install DESTDIR="$destdir" >"$work.install.log" 2>&1; then
		echo "make install failed, last lines of $work.install.log:"
		tail -n 20 "$work.install.log"
		return 1
	fi
	if ! compgen -G "$destdir/lib/modules/$release/*/nv-kthread-q.ko*" >/dev/null; then
		echo "no nv-kthread-q.ko* under $destdir/lib/modules/$release"
		return 1
	fi
	for file in nv-kthread-q.h nv-kthread-q-os.h Module.symvers; do
		if [[ ! -f $devel/$file ]]; then
			echo "make install did not install $devel/$file"
			return 1
		fi
	done

	rm -rf "$work/consumer"
	cp -r "$NVQ_SRC_DIR/examples/consumer" "$work/consumer"
	if ! make -C "$work/consumer" KERNELRELEASE="$release" NVQ_DIR="$devel" >"$work.consumer.log" 2>&1; then
		echo "the consumer did not build against $devel, last lines of $work.consumer.log:"
		tail -n 20 "$work.consumer.log"
		return 1
	fi
	if [[ $(modinfo -F depends "$work/consumer/nvq-consumer.ko") != nv-kthread-q ]]; then
		echo "the consumer built against $devel does not depend on nv-kthread-q"
		return 1
	fi
}

# Check that make sign adds a signature that modinfo shows. Uses the key
# pair that the first DKMS build created.
nvq_check_sign() {
	local release=$1
	local copy=$NVQ_CACHE/packaging/$release/sign
	local signer

	mkdir -p "$(dirname "$copy")"
	if ! nvq_make_in_copy "$copy" "$release" sign >"$copy.log" 2>&1; then
		echo "make sign failed, last lines of $copy.log:"
		tail -n 20 "$copy.log"
		return 1
	fi
	signer=$(modinfo -F signer "$copy/nv-kthread-q.ko")
	if [[ -z $signer ]]; then
		echo "modinfo shows no signer after make sign"
		return 1
	fi
}

# Print the DKMS-installed module file of RELEASE, if any.
nvq_dkms_module_path() {
	compgen -G "/lib/modules/$1/updates/dkms/nv-kthread-q.ko*" | head -n 1
}

# Run make dkms-install for RELEASE and check that the module is installed
# for that kernel, built for it, and signed.
nvq_check_dkms_install() {
	local release=$1
	local copy=$NVQ_CACHE/packaging/$release/dkms
	local module

	mkdir -p "$(dirname "$copy")"
	if ! nvq_make_in_copy "$copy" "$release" dkms-install >"$copy.log" 2>&1; then
		echo "make dkms-install failed, last lines of $copy.log:"
		tail -n 30 "$copy.log"
		return 1
	fi
	module=$(nvq_dkms_module_path "$release")
	if [[ -z $module ]]; then
		echo "no module in /lib/modules/$release/updates/dkms after dkms install"
		return 1
	fi
	nvq_check_vermagic "$module" "$release" || return 1
	if [[ -z $(modinfo -F signer "$module") ]]; then
		echo "$module is not signed"
		return 1
	fi
}

# Remove every version of the module from DKMS, and its sources.
nvq_dkms_remove_all() {
	local version status=

	version=$(nvq_dkms_version)
	if command -v dkms >/dev/null; then
		status=$(dkms status -m "$NVQ_DKMS_NAME" 2>/dev/null) || true
	fi
	if [[ -n $status ]]; then
		dkms remove -m "$NVQ_DKMS_NAME" -v "$version" --all >/dev/null 2>&1 || true
	fi
	rm -rf "/usr/src/$NVQ_DKMS_NAME-$version"
}

# Check that dkms remove left no trace: no DKMS tree entry, no sources, and
# no installed module for any kernel.
nvq_check_dkms_remove() {
	local version leftovers

	version=$(nvq_dkms_version)
	nvq_dkms_remove_all
	leftovers=$(
		ls -d "/var/lib/dkms/$NVQ_DKMS_NAME" "/usr/src/$NVQ_DKMS_NAME-$version" 2>/dev/null
		compgen -G "/lib/modules/*/updates/dkms/nv-kthread-q.ko*"
	) || true
	if [[ -n $leftovers ]]; then
		echo "left behind after dkms remove:"
		echo "$leftovers"
		return 1
	fi
}
