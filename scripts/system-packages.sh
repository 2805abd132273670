#!/usr/bin/env bash
# Install the Debian packages the interop tests, the browser test and the benchmarks talk to,
# when they are missing. Orthanc (PACS with storage commitment, and RIS through its worklists
# plugin, which the package ships) is only started by the tests, never as a service.
# Only as root (CI and the development machines run as root); otherwise list what is missing
# and carry on: the interop tests then fail loudly rather than pretend.
set -euo pipefail
declare -A wanted=(
    [findscu]=dcmtk [storescp]=dcmtk [wlmscpfs]=dcmtk [storescu]=dcmtk
    [dsrdump]=dcmtk [dciodvfy]=dicom3tools [openssl]=openssl
    [chromium]=chromium [chromedriver]=chromium-driver
    [dcentvfy]=dicom3tools [Orthanc]=orthanc
)
missing=()
for tool in "${!wanted[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${wanted[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
readarray -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing Debian packages (install as root): ${packages[*]}" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
