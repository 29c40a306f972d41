"""cerebrum.utils.manager: Cerebrum's version helpers."""
import functools


def compare_versions(version1, version2):
    a = [int(p) for p in version1.split(".")]
    b = [int(p) for p in version2.split(".")]
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else 0
        y = b[i] if i < len(b) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


def get_newest_version(version_list):
    if not version_list:
        return None
    return max(version_list, key=functools.cmp_to_key(compare_versions))
