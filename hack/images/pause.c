/*
 * pause: the process that holds a pod sandbox's namespaces open.
 *
 * Built statically (gcc -static -O2) into the registry.k8s.io/pause image by
 * hack/images/build.sh. As PID 1 of the sandbox it reaps zombies on SIGCHLD,
 * exits 0 on SIGINT/SIGTERM, and otherwise sleeps in pause() forever.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10-kubetasks"

static void say(const char *msg) {
  ssize_t r = write(STDERR_FILENO, msg, strlen(msg));
  (void)r;
}

static void sigdown(int signo) {
  (void)signo;
  say("pause: shutting down\n");
  _exit(0);
}

static void sigreap(int signo) {
  (void)signo;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int signo, void (*fn)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = fn;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) {
    say("pause " VERSION "\n");
    return 0;
  }
  if (getpid() != 1) say("pause: warning: not running as PID 1\n");
  if (handle(SIGINT, sigdown, 0) < 0 || handle(SIGTERM, sigdown, 0) < 0 ||
      handle(SIGCHLD, sigreap, SA_NOCLDSTOP | SA_RESTART) < 0) {
    say("pause: sigaction failed\n");
    return 1;
  }
  for (;;) pause();
  say("pause: infinite loop terminated\n");
  return 42;
}
