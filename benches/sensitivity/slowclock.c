// benches/sensitivity: every clock read becomes a real system call, as on machines
// whose clocksource has no vDSO (Xen, some hypervisors, hpet/acpi_pm).
#define _GNU_SOURCE
#include <time.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <unistd.h>
int clock_gettime(clockid_t id, struct timespec *ts) { return syscall(SYS_clock_gettime, id, ts); }
int gettimeofday(struct timeval *tv, void *tz) { return syscall(SYS_gettimeofday, tv, tz); }
time_t time(time_t *t) { struct timespec ts; syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts); if (t) *t = ts.tv_sec; return ts.tv_sec; }
