#!/bin/sh
# Debian packages avfusion needs beyond Python wheels:
#   libusb-1.0-0  Open3D's wheel links libusb-1.0.so.0
#   chromium      headless browser for the QA report's browser test
# Installs what is missing when running as root with apt-get; otherwise prints how to.
missing=""
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing="$missing libusb-1.0-0"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) || {
    echo "warning: apt-get could not install$missing; Open3D import or the browser test may fail" >&2
    exit 0
  }
else
  echo "hint: install the Debian packages$missing (e.g. 'sudo apt-get install$missing');" >&2
  echo "      without libusb-1.0-0 Open3D cannot be imported, without chromium the report's browser test is skipped" >&2
fi
