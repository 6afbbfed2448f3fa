/* The parts of the ublk ABI that Debian 12's linux-libc-dev (6.1 headers) lacks. linux/ublk_cmd.h of
 * 6.1 has the structures, the legacy command numbers and UBLK_F_USER_RECOVERY(_REISSUE); the
 * ioctl-encoded command numbers (UBLK_U_*) and UBLK_F_CMD_IOCTL_ENCODE came with Linux 6.2 and are
 * defined here as include/uapi/linux/ublk_cmd.h of Linux 6.12 has them. Newer headers win. */
#ifndef STOR_UBLK_ABI_H
#define STOR_UBLK_ABI_H
#include <linux/ioctl.h>
#include <linux/ublk_cmd.h>

#ifndef UBLK_U_CMD_ADD_DEV
#define UBLK_U_CMD_GET_DEV_INFO        _IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV             _IOWR('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV             _IOWR('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV           _IOWR('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV            _IOWR('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS          _IOWR('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_PARAMS          _IOR('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY _IOWR('u', UBLK_CMD_START_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY   _IOWR('u', UBLK_CMD_END_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_IO_FETCH_REQ            _IOWR('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ _IOWR('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#endif

#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1UL << 6)
#endif

/* A device id the kernel picks (ADD_DEV with dev_id = U32_MAX). */
#define UBLK_DEV_ID_ANY 0xffffffffu
/* The largest ids and depth the 6.12 driver accepts (UBLK_MINORS, UBLK_MAX_QUEUE_DEPTH). */
#define UBLK_MAX_DEV_ID ((1u << 20) - 1)
#endif
