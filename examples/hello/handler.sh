#!/bin/sh
# The demo function: greets whoever the request body names.
name=$(cat)
printf 'Hello, %s! (from VM %s)\n' "${name:-world}" "${CVM_VM_ID:-?}"
