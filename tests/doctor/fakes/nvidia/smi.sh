# Sourced by each scenario's nvidia-smi. The scenario sets DRIVER, CUDA and GPUS, one row per GPU
# in the order of the doctor's --query-gpu fields (index, name, uuid, driver_version, memory.total,
# memory.used, ecc.errors.uncorrected.volatile.total, temperature.gpu, persistence_mode,
# compute_cap). NO_COMPUTE_CAP=1 answers like drivers before R510, which lack compute_cap.

query=""
for arg in "$@"; do
    case "$arg" in
        --query-gpu=*) query="${arg#--query-gpu=}" ;;
    esac
done

if [[ -n "$query" ]]; then
    if [[ "$query" == *compute_cap* && -n "${NO_COMPUTE_CAP:-}" ]]; then
        echo 'Field "compute_cap" is not a valid field to query.'
        echo
        echo "Run 'nvidia-smi --help-query-gpu' for more information."
        exit 2
    fi
    for row in "${GPUS[@]}"; do
        if [[ "$query" == *compute_cap* ]]; then echo "$row"; else echo "${row%, *}"; fi
    done
    exit 0
fi

line="+-----------------------------------------------------------------------------------------+"
echo "Tue Nov 10 09:00:00 2026"
echo "$line"
printf '| NVIDIA-SMI %-22s Driver Version: %-14s CUDA Version: %-9s|\n' "$DRIVER" "$DRIVER" "$CUDA"
echo "|-----------------------------------------+------------------------+----------------------+"
for row in "${GPUS[@]}"; do
    IFS=',' read -r index name _ <<<"$row"
    printf '| %3s %-35s |\n' "$index" "${name# }"
done
echo "$line"
